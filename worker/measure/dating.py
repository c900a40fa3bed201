"""Which gestational age a centile is computed for, and the growth facts of one HC value."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from db import StudyDating
from models.growth import CentileResult, ga_from_hc, hc_centile


@dataclass(frozen=True)
class GestationalAge:
    """GA used for centiles (days) and its source: ``given`` (with the job), ``report_edd`` / ``report_lmp`` (the
    study's OB-GYN report), ``lmp`` (the image header) or ``none``."""

    days: float | None
    source: str


def ga_for_centile(given_days: float | None, lmp: dt.date | None, study_date: dt.date | None,
                   report: StudyDating | None = None) -> GestationalAge:
    """A GA given with the job, else the study's report (its EDD: GA = 280 - (EDD - Study Date), ``report_edd``;
    else its LMP, ``report_lmp``), else (0010,21D0) Last Menstrual Date against the Study Date, else none.

    The report's dating counts on the image's (0008,0020) Study Date, or the report's own when the image has
    none. Never the GA that the same HC produced: a centile of a dating estimate is circular.
    """
    if given_days is not None:
        return GestationalAge(float(given_days), "given")
    if report is not None:
        days = report.ga_days_on(study_date) if study_date is not None else report.ga_days
        if days is not None and days >= 0:
            return GestationalAge(float(days), report.source)
    if lmp and study_date and study_date >= lmp:
        return GestationalAge(float((study_date - lmp).days), "lmp")
    return GestationalAge(None, "none")


@dataclass(frozen=True)
class GrowthFacts:
    """What the growth standards say about one HC."""

    ga: GestationalAge
    ga_estimate_days: float | None
    ga_formula: str | None
    centile: CentileResult

    def columns(self) -> dict[str, object]:
        """The measurement-row columns these facts fill."""
        return {
            "ga_days": self.ga.days,
            "ga_source": self.ga.source,
            "ga_estimate_days": self.ga_estimate_days,
            "ga_formula": self.ga_formula,
            "hc_z_score": self.centile.z_score,
            "hc_centile": self.centile.centile,
            "growth_standard": self.centile.standard,
            "growth_flags": ",".join(self.centile.flags) or None,
            "centile_reason": self.centile.reason,
        }


def growth_facts(hc_mm: float, ga: GestationalAge, standard: str) -> GrowthFacts:
    """GA estimated from HC (INTERGROWTH-21st 2016; Hadlock 1984 past its 25+6 week range) and the
    HC centile for the GA used (``ga``), by ``standard``."""
    estimate = ga_from_hc(hc_mm, "intergrowth_2016")
    if not estimate.in_range:
        hadlock = ga_from_hc(hc_mm, "hadlock_1984")
        if hadlock.in_range:
            estimate = hadlock
    return GrowthFacts(
        ga=ga,
        ga_estimate_days=round(estimate.ga_days, 2),
        ga_formula=estimate.formula + ("" if estimate.in_range else "_out_of_range"),
        centile=hc_centile(hc_mm, ga.days, standard),
    )
