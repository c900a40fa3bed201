"""A person's decision about a measurement: checked, turned into the values it stands for, and stored.

A correction is an ellipse in mm (the frame of the row's own: millimetres from the top-left of the calibrated
region the network saw) or an HC alone. Its HC/BPD/OFD come from ``models.geometry.biometry.head_sizes`` and
its GA estimate, z-score and centile from ``worker.measure.dating.growth_facts`` for the row's own GA, as the
pipeline computes the model's; an HC alone scales the model's ellipse (same centre, angle and shape) so that
BPD and OFD follow it. The model's own columns are never changed (``db.record_review``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db import Measurement, MeasurementStatus, Review, ReviewDecision, record_review
from db.tables import REJECTING_DECISIONS
from models.errors import FetalHCError
from models.geometry.biometry import head_sizes
from models.geometry.ellipse import Ellipse
from worker.measure.dating import GestationalAge, growth_facts

log = logging.getLogger(__name__)

# An HC a person may set: wider than any gestation's (HC18 44-346 mm; INTERGROWTH-21st P99 at 42 weeks ~380 mm),
# narrower than a slip of the hand (900 mm, 5 mm).
HC_SANE_MM = (50.0, 450.0)
SEMI_AXIS_MAX_MM = 200.0  # an HC of 450 mm has a semi-axis of at most ~112 mm (a circle: 72 mm)
CENTRE_MAX_MM = 2000.0  # no ultrasound region is 2 m from its corner
NOTE_MAX = 2000
ELLIPSE_FIELDS = ("center_x_mm", "center_y_mm", "semi_axis_a_mm", "semi_axis_b_mm", "angle_rad")


class ReviewRefused(FetalHCError, ValueError):
    """A decision that cannot be recorded as given; ``reason`` says which rule (``insane_value``...)."""

    def __init__(self, message: str, reason: str = "invalid_review") -> None:
        super().__init__(message, reason)
        self.args = (message, reason)


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ReviewRefused(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision, checked on creation: ``corrected`` carries an ellipse (mm) or an HC, nothing else does.

    Raises:
        ReviewRefused: a value outside the sane ranges (a semi-axis <= 0, an HC of 900 mm...), or the wrong fields
            for the decision.
    """

    decision: ReviewDecision
    ellipse_mm: Ellipse | None = None
    hc_mm: float | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.decision is not ReviewDecision.CORRECTED and (self.ellipse_mm is not None or self.hc_mm is not None):
            raise ReviewRefused(f"only a 'corrected' decision takes an ellipse or hc_mm, not {self.decision.value!r}")
        if self.decision is ReviewDecision.CORRECTED and (self.ellipse_mm is None) == (self.hc_mm is None):
            raise ReviewRefused("a correction gives either the ellipse (center_x_mm, center_y_mm, semi_axis_a_mm, "
                                "semi_axis_b_mm, angle_rad) or hc_mm alone")
        hc = self.hc_mm if self.ellipse_mm is None else self.ellipse_mm.perimeter
        if hc is not None and not HC_SANE_MM[0] <= hc <= HC_SANE_MM[1]:
            raise ReviewRefused(f"an HC of {hc:.1f} mm is outside {HC_SANE_MM[0]:g}-{HC_SANE_MM[1]:g} mm: no fetal "
                                "head has it", reason="insane_value")
        if self.note is not None and len(self.note) > NOTE_MAX:
            raise ReviewRefused(f"the note has {len(self.note)} characters; at most {NOTE_MAX}")

    @classmethod
    def parse(cls, decision: str, fields: dict[str, Any], note: str | None = None) -> Decision:
        """A decision from its parts as sent: the five ellipse fields (mm, radians) and/or ``hc_mm``.

        Raises:
            ReviewRefused: an unknown decision, a partial ellipse, values outside the sane ranges.
        """
        try:
            kind = ReviewDecision(decision)
        except ValueError:
            raise ReviewRefused(f"decision {decision!r}; choose one of: "
                                f"{', '.join(d.value for d in ReviewDecision)}") from None
        given = [name for name in ELLIPSE_FIELDS if fields.get(name) is not None]
        ellipse = None
        if given:
            if len(given) != len(ELLIPSE_FIELDS):
                missing = [name for name in ELLIPSE_FIELDS if name not in given]
                raise ReviewRefused(f"the corrected ellipse needs all of {', '.join(ELLIPSE_FIELDS)}; "
                                    f"missing {', '.join(missing)}")
            cx, cy, a, b, angle = (_finite(name, fields[name]) for name in ELLIPSE_FIELDS)
            if not (0 < a <= SEMI_AXIS_MAX_MM and 0 < b <= SEMI_AXIS_MAX_MM):
                raise ReviewRefused(f"semi-axes must lie in (0, {SEMI_AXIS_MAX_MM:g}] mm, got {a:g} and {b:g}",
                                    reason="insane_value")
            if abs(cx) > CENTRE_MAX_MM or abs(cy) > CENTRE_MAX_MM:
                raise ReviewRefused(f"the centre ({cx:g}, {cy:g}) mm is not on any image", reason="insane_value")
            ellipse = Ellipse.make(cx, cy, a, b, angle)
        hc = fields.get("hc_mm")
        if hc is not None:
            hc = _finite("hc_mm", hc)
            if ellipse is not None:
                raise ReviewRefused("give the ellipse or hc_mm, not both (the ellipse's HC is its perimeter)")
        return cls(kind, ellipse, hc, note or None)


def ellipse_of(source: Measurement | Review | None) -> Ellipse | None:
    """The ellipse (mm, the region's frame) a measurement or a review stores; None where any part is missing."""
    if source is None:
        return None
    values = [getattr(source, name) for name in ELLIPSE_FIELDS]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return Ellipse.make(*values)


def _ellipse_values(ellipse: Ellipse) -> dict[str, float]:
    return dict(zip(ELLIPSE_FIELDS, (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle)))


def reviewed_values(row: Measurement, decision: Decision, growth_standard: str) -> dict[str, Any]:
    """The ``reviews`` columns a decision about ``row`` fills: the ellipse and sizes it confirms, their growth facts.

    Raises:
        ReviewRefused: accepting a row that has no outcome to accept (a failed one), or correcting a failed one.
    """
    kind = decision.decision
    values: dict[str, Any] = {"note": decision.note}
    if kind in REJECTING_DECISIONS:
        return values
    if row.status == MeasurementStatus.FAILED:
        raise ReviewRefused(f"measurement {row.id} failed ({row.reason}): there is no outcome to "
                            f"{'accept' if kind is ReviewDecision.ACCEPTED else 'correct'} (reject it as unusable)",
                            reason="nothing_to_review")
    if kind is ReviewDecision.ACCEPTED:
        ellipse = ellipse_of(row)
        if ellipse is not None:
            values.update(_ellipse_values(ellipse))
        values.update({"hc_mm": row.hc_mm, "bpd_mm": row.bpd_mm, "ofd_mm": row.ofd_mm,
                       "ga_estimate_days": row.ga_estimate_days, "hc_z_score": row.hc_z_score,
                       "hc_centile": row.hc_centile})
        return values
    ellipse = decision.ellipse_mm
    if ellipse is None and decision.hc_mm is not None:  # HC alone: the model's ellipse scaled to it, if any
        model = ellipse_of(row)
        if model is not None:
            k = decision.hc_mm / model.perimeter  # the perimeter is linear in scale
            ellipse = Ellipse(model.cx, model.cy, model.a * k, model.b * k, model.angle)
    if ellipse is not None:
        sizes = head_sizes(ellipse)
        hc, bpd, ofd = (decision.hc_mm if decision.hc_mm is not None else sizes.hc_mm), sizes.bpd_mm, sizes.ofd_mm
        values.update(_ellipse_values(ellipse))
    else:
        hc, bpd, ofd = decision.hc_mm, None, None
    assert hc is not None
    values.update({"hc_mm": round(hc, 2), "bpd_mm": None if bpd is None else round(bpd, 2),
                   "ofd_mm": None if ofd is None else round(ofd, 2)})
    values.update(_growth(hc, row, growth_standard))
    return values


def _growth(hc_mm: float, row: Measurement, growth_standard: str) -> dict[str, Any]:
    """GA estimate, z-score and centile of an HC for the row's own GA (as the pipeline computes the model's)."""
    ga = GestationalAge(row.ga_days, row.ga_source or "none")
    facts = growth_facts(hc_mm, ga, row.growth_standard or growth_standard)
    return {"ga_estimate_days": facts.ga_estimate_days, "hc_z_score": facts.centile.z_score,
            "hc_centile": facts.centile.centile}


def reviewed_growth(row: Measurement, ga_days: float | None, ga_source: str | None,
                    growth_standard: str) -> dict[str, Any]:
    """The ``measurements`` columns of a reviewed HC's growth facts for a (new) GA: what a report that arrives after
    the review changes beside the model's own (``worker.measure.reports``). Empty for a row with no reviewed HC."""
    if row.reviewed_hc_mm is None:
        return {}
    facts = growth_facts(row.reviewed_hc_mm, GestationalAge(ga_days, ga_source or "none"),
                         row.growth_standard or growth_standard)
    return {"reviewed_hc_z_score": facts.centile.z_score, "reviewed_hc_centile": facts.centile.centile}


def apply_review(session: Session, row: Measurement, reviewer: str, decision: Decision,
                 growth_standard: str) -> Review:
    """Record the decision about ``row`` by ``reviewer`` (a new ``reviews`` row; the row carries it as its latest)."""
    review = record_review(session, row, reviewer, decision.decision,
                           reviewed_values(row, decision, growth_standard))
    log.info("measurement %d reviewed by %s: %s", row.id, reviewer, decision.decision.value)
    return review
