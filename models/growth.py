"""Fetal head-circumference growth standards: centiles, z-scores, chart curves and HC dating."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.special import ndtr, ndtri

# Both standards cover 14+0 to 40+0 weeks inclusive; we never extrapolate beyond it.
GA_MIN_DAYS, GA_MAX_DAYS = 98.0, 280.0
_RANGE_TEXT = "standard valid 98-280 days (14+0 to 40+0 weeks)"
# INTERGROWTH-21st HC dating is intended for 14+0 to 25+6 weeks (Papageorghiou, UOG 2016).
IG_DATING_DAYS = (98.0, 181.0)
# Hadlock 1984 studied roughly 14 to 42 weeks.
HADLOCK_DAYS = (98.0, 294.0)
GA_FORMULAS: tuple[str, ...] = ("intergrowth_2016", "hadlock_1984")
# WHO can only be read between its outermost tabulated quantiles.
WHO_CENTILE_RANGE = (1.0, 99.0)

# WHO fetal growth charts, HC quantile regression (Kiserud et al., PLoS Med 2017;
# whoFetalStandards coefficientsGlobalV3.csv): ln(HC_q) = b0 + b1*GA + b2*GA^2 + b3*GA^3, GA weeks.
_WHO_HC: dict[float, tuple[float, float, float, float]] = {
    0.01: (1.51782795874402e+0, 2.99296859125438e-1, -7.52376152126206e-3, 6.7179373384666e-5),
    0.025: (1.59317517131532e+0, 2.9459800552433e-1, -7.3860372566707e-3, 6.56951770216148e-5),
    0.05: (1.74883945698398e+0, 2.78405280785763e-1, -6.77990950687641e-3, 5.83587774721548e-5),
    0.1: (1.83059537388222e+0, 2.7244251174974e-1, -6.59546864496838e-3, 5.63957469365128e-5),
    0.25: (1.94181945227701e+0, 2.6584757167445e-1, -6.44544904011178e-3, 5.54517813431795e-5),
    0.5: (2.09924879247164e+0, 2.53373656106037e-1, -6.05647816678282e-3, 5.14256072059917e-5),
    0.75: (2.20777451923048e+0, 2.45212320927953e-1, -5.78557948587613e-3, 4.83972618799514e-5),
    0.9: (2.31776999721364e+0, 2.36651510200538e-1, -5.50781288608926e-3, 4.53975879344267e-5),
    0.95: (2.39550106176494e+0, 2.29586666082063e-1, -5.25318141633775e-3, 4.23738937924844e-5),
    0.975: (2.50074069629423e+0, 2.20067854715719e-1, -4.93623111462443e-3, 3.89066000946519e-5),
    0.99: (2.50189533265806e+0, 2.23785148311865e-1, -5.14245402239348e-3, 4.20117020605557e-5),
}
WHO_QUANTILES: tuple[float, ...] = tuple(_WHO_HC)
_WHO_Z = np.array([float(ndtri(p)) for p in WHO_QUANTILES])
_WHO_B = np.array(list(_WHO_HC.values()))


class Standard(str, Enum):
    """Which fetal growth standard to read HC against."""

    INTERGROWTH = "intergrowth"
    WHO = "who"


@dataclass(frozen=True)
class CentileResult:
    """HC placed on a standard; ``z_score``/``centile`` are None when ``reason`` says why."""

    standard: str
    ga_days: float | None
    z_score: float | None
    centile: float | None
    flags: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class GAEstimate:
    """Gestational age estimated from HC; ``in_range`` False when outside the formula's range."""

    ga_days: float
    formula: str
    in_range: bool
    note: str | None = None


def _standard(standard: Standard | str) -> Standard:
    """Parse a standard name, listing the valid ones on error."""
    try:
        return Standard(standard.lower() if isinstance(standard, str) else standard)
    except ValueError:
        valid = ", ".join(s.value for s in Standard)
        raise ValueError(f"unknown standard {standard!r}; choose one of: {valid}") from None


def _check_hc(hc_mm: float) -> float:
    hc = float(hc_mm)
    if not math.isfinite(hc) or hc <= 0:
        raise ValueError(f"HC must be a positive number of millimetres, got {hc_mm!r}")
    return hc


def _ga_in_range(ga_days: float) -> bool:
    return GA_MIN_DAYS <= ga_days <= GA_MAX_DAYS


def intergrowth_hc_mean_sd(ga_weeks: float) -> tuple[float, float]:
    """Mean and SD of HC (mm) at exact GA weeks (Papageorghiou et al., Lancet 2014)."""
    ga = float(ga_weeks)
    ln = math.log(ga)
    mean = -28.2849 + 1.69267 * ga**2 - 0.397485 * ga**2 * ln
    sd = 1.98735 + 0.0136772 * ga**3 - 0.00726264 * ga**3 * ln + 0.000976253 * ga**3 * ln**2
    return mean, sd


def _who_log_quantiles(ga_days: float) -> np.ndarray:
    """ln(HC) of the 11 WHO quantile curves at one GA (Kiserud et al., PLoS Med 2017)."""
    ga = ga_days / 7.0
    return _WHO_B @ np.array([1.0, ga, ga**2, ga**3])


def hc_quantile(standard: Standard | str, ga_days: float, centile: float) -> float:
    """HC (mm) at ``centile`` (0-100) of the standard at ``ga_days``.

    INTERGROWTH: mean + z*sd, z = Phi^-1(centile/100). WHO: ln(HC) interpolated linearly in
    z-space between the neighbouring tabulated quantiles; only 1-99 can be read.

    Raises:
        ValueError: unknown standard, GA outside 98-280 days, or centile outside the range.
    """
    std = _standard(standard)
    if not _ga_in_range(float(ga_days)):
        raise ValueError(f"ga_out_of_range: {ga_days} days; {_RANGE_TEXT}")
    if not 0.0 < centile < 100.0:
        raise ValueError(f"centile_out_of_range: must lie strictly in (0, 100), got {centile}")
    z = float(ndtri(centile / 100.0))
    if std is Standard.INTERGROWTH:
        mean, sd = intergrowth_hc_mean_sd(ga_days / 7.0)
        return mean + z * sd
    lo, hi = WHO_CENTILE_RANGE
    if not lo <= centile <= hi:
        raise ValueError(
            f"centile_out_of_range: WHO quantiles are tabulated from P{lo:g} to P{hi:g}, "
            f"got {centile}; not extrapolated"
        )
    return float(np.exp(np.interp(z, _WHO_Z, _who_log_quantiles(ga_days))))


def _who_z(hc_mm: float, ga_days: float) -> float:
    """z for HC on the WHO chart: ln(HC) -> z piecewise linear through the 11 quantiles.

    Beyond P1/P99 the line is extended from the outermost quantile with the slope of the
    whole tail (P1-P10 or P90-P99), less noisy than the narrow last segment: the centile keeps
    falling below 1 / rising above 99 instead of sticking at the edge.
    """
    lq = _who_log_quantiles(ga_days)  # strictly increasing over 14-40 weeks (min gap 2.2 mm)
    x = math.log(hc_mm)
    if x < lq[0]:  # _WHO_Z[3] is P10, _WHO_Z[-4] is P90
        return float(_WHO_Z[0] + (x - lq[0]) * (_WHO_Z[3] - _WHO_Z[0]) / (lq[3] - lq[0]))
    if x > lq[-1]:
        return float(_WHO_Z[-1] + (x - lq[-1]) * (_WHO_Z[-1] - _WHO_Z[-4]) / (lq[-1] - lq[-4]))
    return float(np.interp(x, lq, _WHO_Z))


def _flags(centile: float) -> tuple[str, ...]:
    flags = []
    if centile < 3:
        flags.append("below_p3")
    if centile < 10:
        flags.append("below_p10")
    if centile > 90:
        flags.append("above_p90")
    if centile > 97:
        flags.append("above_p97")
    return tuple(flags)


def hc_centile(
    hc_mm: float, ga_days: float | None, standard: Standard | str = "intergrowth"
) -> CentileResult:
    """Z-score, centile and P3/P10/P90/P97 flags of an HC at a GA (from dating, not this HC).

    Outside 98-280 days or without GA, z/centile are None and ``reason`` says why; nothing
    is extrapolated in GA. WHO centiles beyond P1/P99 are extrapolated in z (see ``_who_z``).

    Raises:
        ValueError: unknown standard or non-positive HC.
    """
    std = _standard(standard)
    hc = _check_hc(hc_mm)
    if ga_days is None or not math.isfinite(float(ga_days)):
        return CentileResult(std.value, None, None, None, (), "no_ga")
    ga = float(ga_days)
    if not _ga_in_range(ga):
        return CentileResult(std.value, ga, None, None, (), f"ga_out_of_range: {_RANGE_TEXT}")
    if std is Standard.INTERGROWTH:
        mean, sd = intergrowth_hc_mean_sd(ga / 7.0)
        z = (hc - mean) / sd
    else:
        z = _who_z(hc, ga)
    centile = 100.0 * float(ndtr(z))
    return CentileResult(std.value, ga, z, centile, _flags(centile), None)


def ga_from_hc(hc_mm: float, formula: str = "intergrowth_2016") -> GAEstimate:
    """Gestational age (days) from HC (mm) alone.

    ``intergrowth_2016``: Papageorghiou et al., UOG 2016, intended for 14+0 to 25+6 weeks.
    ``hadlock_1984``: Hadlock et al., Radiology 1984;152:497, HC in cm, studied ~14-42 weeks.

    Raises:
        ValueError: non-positive HC or unknown formula (the valid ones are listed).
    """
    hc = _check_hc(hc_mm)
    if formula == "intergrowth_2016":
        # GA_days = exp(0.05970*ln(HC)^2 + 0.000000006409*HC^3 + 3.3258) (Papageorghiou, UOG 2016)
        days = math.exp(0.05970 * math.log(hc) ** 2 + 0.000000006409 * hc**3 + 3.3258)
        lo, hi = IG_DATING_DAYS
        span = "14+0 to 25+6 weeks"
    elif formula == "hadlock_1984":
        cm = hc / 10.0
        days = 7.0 * (8.96 + 0.540 * cm + 0.0003 * cm**3)  # Hadlock 1984, HC in centimetres
        lo, hi = HADLOCK_DAYS
        span = "about 14 to 42 weeks"
    else:
        raise ValueError(f"unknown formula {formula!r}; choose one of: {', '.join(GA_FORMULAS)}")
    in_range = lo <= days <= hi
    note = None if in_range else f"estimate {days:.1f} days is outside {formula}'s range ({span})"
    return GAEstimate(days, formula, in_range, note)


def centile_curves(
    standard: Standard | str,
    ga_days_array: Iterable[float] | np.ndarray,
    centiles: Iterable[float] = (3, 10, 50, 90, 97),
) -> dict[float, np.ndarray]:
    """HC (mm) of each centile at each GA, for drawing a chart; NaN where GA is out of range."""
    std = _standard(standard)
    raw = ga_days_array if isinstance(ga_days_array, np.ndarray) else list(ga_days_array)
    ga = np.asarray(raw, dtype=float)
    ok = (ga >= GA_MIN_DAYS) & (ga <= GA_MAX_DAYS)
    curves: dict[float, np.ndarray] = {}
    for c in centiles:
        out = np.full(ga.shape, np.nan)
        out[ok] = [hc_quantile(std, g, float(c)) for g in ga[ok]]
        curves[float(c)] = out
    return curves
