"""The API's answers as pydantic models: what each endpoint returns, as the OpenAPI schema shows it.

Separate from the ORM rows (``db.tables``): a measurement or job answer has one field per column,
dates as ISO strings; answers are built from these models and encoded by ``messages.json_bytes``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from db.reviews import EFFECTIVE_COLUMNS
from db.tables import Job, Measurement, Review


class Answer(BaseModel):
    """Base of every answer: unknown fields refused, so the schema says all there is."""

    model_config = ConfigDict(extra="forbid")


def _columns_model(name: str, table: Any, doc: str) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for column in table.__table__.columns:
        kind = column.type.python_type
        kind = str if kind in (dt.date, dt.datetime) else kind  # dates travel as ISO strings
        fields[column.name] = (kind | None, None)
    return create_model(name, __base__=Answer, __doc__=doc, **fields)


def _effective_fields() -> dict[str, Any]:
    """``db.EFFECTIVE_COLUMNS``: the values after people's reviews (the latest review's, else the model's)."""
    kinds: dict[str, Any] = {"effective_status": str | None, "confirmed": bool | None}
    return {name: (kinds.get(name, float | None), None) for name in EFFECTIVE_COLUMNS}


MeasurementOut = create_model(
    "MeasurementOut", __base__=_columns_model("MeasurementColumns", Measurement, "Every column of a row."),
    __doc__="One stored measurement row (``measurements``), every column, then the effective values: the latest "
            "review's when a person decided (``confirmed``: accepted or corrected), else the model's.",
    **_effective_fields())
JobOut = _columns_model("JobOut", Job, "One job: a scan that arrived and what became of it (``jobs``).")
ReviewOut = _columns_model("ReviewOut", Review, "One decision of a named reviewer about a measurement (``reviews``).")


class MeasurementReviewsOut(Answer):
    """``GET /api/measurements/{id}``: the row and every decision about it, oldest first (the audit trail)."""

    measurement: MeasurementOut  # type: ignore[valid-type]
    reviews: list[ReviewOut]  # type: ignore[valid-type]


class ReviewedOut(Answer):
    """``POST /api/measurements/{id}/review``: the row as it reads now (effective values) and the new decision."""

    measurement: MeasurementOut  # type: ignore[valid-type]
    review: ReviewOut  # type: ignore[valid-type]


class WhoAmIOut(Answer):
    """``GET /api/whoami``: the named token's reviewer (None: the shared token or none), and whether they can review."""

    name: str | None
    can_review: bool
    token_required: bool


class CurvesOut(Answer):
    """``GET /api/growth-curves``: HC (mm) at P3/P10/P50/P90/P97 of a standard, by GA in days."""

    standard: str
    ga_days: list[float]
    centiles: dict[str, list[float]]


class ErrorOut(Answer):
    """Any answer other than 200: ``status`` failed, a machine-readable ``reason`` and the message."""

    model_config = ConfigDict(extra="allow")
    status: str = "failed"
    reason: str
    message: str


class HealthOut(Answer):
    """``GET /healthz``: database reachable, model and head-plane gate files present, the plane classifier's file
    (``plane_classifier``: present | off | invalid)."""

    status: str
    database: str
    model_file: str
    gate_file: str
    plane_classifier: str
    model_loaded: bool


class ModelOut(Answer):
    loaded: bool
    name: str | None
    version: str | None


class StatsOut(Answer):
    """``GET /api/stats``: jobs and measurements counted by status, measurements by effective status after people's
    reviews (``effective``: ``reviewed``, ``rejected``, else the row's own), measurements by standard plane
    (``planes``: rows with a plane label, by SonoNet-16's class), and the model measuring here."""

    jobs: dict[str, int]
    measurements: dict[str, int]
    effective: dict[str, int]
    planes: dict[str, int]
    model: ModelOut


class PixelEllipse(Answer):
    cx: float
    cy: float
    a: float
    b: float
    angle: float


class EllipseOut(Answer):
    center_x_mm: float | None
    center_y_mm: float | None
    semi_axis_a_mm: float | None
    semi_axis_b_mm: float | None
    angle_rad: float | None
    px: PixelEllipse
    origin_xy: list[int]
    frame: str


class SpacingOut(Answer):
    x_mm: float | None
    y_mm: float | None
    source: str | None
    region: list[int | None] | None


class GaOut(Answer):
    days: float | None
    source: str | None
    estimate_days: float | None
    formula: str | None
    hc_z_score: float | None
    hc_centile: float | None
    standard: str | None
    flags: list[str]
    centile_reason: str | None


class ScanOut(Answer):
    sop_instance_uid: str | None
    study_instance_uid: str | None
    frame: int | None
    patient_id: str | None
    study_date: dt.date | None


class InputOut(Answer):
    kind: str
    bytes: int
    sha256: str


class ModelNameOut(Answer):
    name: str | None
    version: str | None


class TimingOut(Answer):
    read: float | None
    infer: float | None
    total: float | None


class MeasureOut(Answer):
    """``POST /api/measure``: the measurement of one upload (or why there is none), with its overlay image."""

    status: str
    reason: str | None
    message: str | None
    hc_mm: float | None
    bpd_mm: float | None
    ofd_mm: float | None
    quality: float | None
    head_plane_score: float | None
    plane_label: str | None  # SonoNet-16's standard plane (FETALHC_PLANE_CLASSIFIER; None without it)
    plane_probability: float | None
    plane_probabilities: dict[str, float] | None
    flags: list[str]
    hc_tta_spread_mm: float | None
    ellipse: EllipseOut | None
    spacing: SpacingOut
    ga: GaOut
    scan: ScanOut
    input: InputOut
    model: ModelNameOut
    timing_ms: TimingOut
    stored: bool
    job_id: int | None
    overlay_png: str | None
