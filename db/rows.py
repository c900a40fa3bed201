"""``MeasurementRow``: one measurement as the pipeline makes it and every consumer reads it (frozen, typed).

The pipeline (``worker.pipeline``) builds it, ``db.upsert_measurement`` stores it, the task, the
API and the CLI read it. Units are in the field names (mm, days, ms), as in ``db.tables.Measurement``,
whose columns these are (less ``id`` and the timestamps the database keeps).

A row knows which fields were given: a field never set is absent from ``as_dict()`` (and from the
upsert, which then leaves that column as it is: the ``sr_status`` of a row stored while SR export
is off), where one set to None is written as NULL. It reads as a mapping of those fields
(``row["status"]``, ``row.get("hc_mm")``), as the plain dicts it replaces did.

Example:
    >>> row = MeasurementRow.of(sop_instance_uid="1.2.3", model_version="ab" * 32, status="measured", hc_mm=171.2)
    >>> row.hc_mm, row.get("bpd_mm"), row.replace(detail="checked")["detail"]
    (171.2, None, 'checked')
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from db.tables import MeasurementStatus


@dataclass(frozen=True, eq=False)
class MeasurementRow(Mapping[str, Any]):
    """One measurement row (see the module docstring); build it with ``of(**fields)``, change it with ``replace``."""

    status: MeasurementStatus
    sop_instance_uid: str | None = None
    frame: int | None = None
    model_version: str | None = None
    model_name: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    sop_class_uid: str | None = None
    accession_number: str | None = None
    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_birth_date: dt.date | None = None
    study_date: dt.date | None = None
    path: str | None = None
    job_id: int | None = None
    spacing_mm_x: float | None = None
    spacing_mm_y: float | None = None
    spacing_source: str | None = None
    region_x0: int | None = None
    region_y0: int | None = None
    region_x1: int | None = None
    region_y1: int | None = None
    center_x_mm: float | None = None
    center_y_mm: float | None = None
    semi_axis_a_mm: float | None = None
    semi_axis_b_mm: float | None = None
    angle_rad: float | None = None
    hc_mm: float | None = None
    bpd_mm: float | None = None
    ofd_mm: float | None = None
    quality: float | None = None
    hc_tta_spread_mm: float | None = None
    head_plane_score: float | None = None
    plane_label: str | None = None  # SonoNet-16's class (FETALHC_PLANE_CLASSIFIER), its probability, all 14
    plane_probability: float | None = None
    plane_probabilities: dict[str, float] | None = None
    flags: str | None = None  # comma-separated
    ga_days: float | None = None
    ga_source: str | None = None
    ga_estimate_days: float | None = None
    ga_formula: str | None = None
    hc_z_score: float | None = None
    hc_centile: float | None = None
    growth_standard: str | None = None
    growth_flags: str | None = None
    centile_reason: str | None = None
    sonographer_hc_mm: float | None = None
    hc_diff_mm: float | None = None
    fetus_count: int | None = None
    reason: str | None = None
    detail: str | None = None
    read_ms: float | None = None
    infer_ms: float | None = None
    total_ms: float | None = None
    sr_status: str | None = None
    # The latest review (db.reviews sets these; the pipeline never gives them, so storing a row again keeps them).
    review_decision: str | None = None
    reviewed_by: str | None = None
    reviewed_at: dt.datetime | None = None
    reviewed_hc_mm: float | None = None
    reviewed_bpd_mm: float | None = None
    reviewed_ofd_mm: float | None = None
    reviewed_ga_estimate_days: float | None = None
    reviewed_hc_z_score: float | None = None
    reviewed_hc_centile: float | None = None
    given: tuple[str, ...] = field(default=(), repr=False)  # the fields set, in the order they were (dict order)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "status", MeasurementStatus(self.status))
        except ValueError:
            choices = ", ".join(s.value for s in MeasurementStatus)
            raise ValueError(f"status={self.status!r}; choose one of: {choices}") from None
        if self.frame is not None and self.frame < 1:
            raise ValueError(f"frame={self.frame}: frames are numbered from 1")

    @classmethod
    def of(cls, **values: Any) -> MeasurementRow:
        """A row of exactly these fields (unknown names refused: ``TypeError``)."""
        return cls(**values, given=tuple(values))

    def replace(self, **changes: Any) -> MeasurementRow:
        """A copy with ``changes`` set (they join the given fields)."""
        return dataclasses.replace(self, **changes, given=(*self.given, *(k for k in changes if k not in self.given)))

    def as_dict(self) -> dict[str, Any]:
        """The given fields as a dict (``status`` as its string), in the order given: for the database and JSON."""
        return {name: self[name] for name in self}

    # -- Mapping over the given fields ------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        if name not in self.given:
            raise KeyError(name)
        value = getattr(self, name)
        return value.value if isinstance(value, MeasurementStatus) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self.given)

    def __len__(self) -> int:
        return len(self.given)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compared as a mapping, like the dicts it replaces
