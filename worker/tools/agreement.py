"""``fetalhc agreement``: Bland-Altman agreement of fetalhc's HC with the sonographer's, overall, by scanner and month;
and with the reviewers' (``fetalhc`` review decisions) as a third reader: fetalhc vs reviewer, sonographer vs reviewer.

Bland JM, Altman DG, "Statistical methods for assessing agreement between two methods of clinical
measurement", Lancet 1986;1(8476):307-10: the mean difference (bias) and the 95% limits of agreement,
bias +- 1.96 SD of the differences. Differences are fetalhc minus sonographer, in mm; against the reviewer, the
first reader minus the reviewer (a reviewer who accepted fetalhc's HC read it as fetalhc did: difference 0).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from db import AgreementPair, ReviewedHC

UNKNOWN_MODEL = "unknown"


@dataclass(frozen=True)
class Agreement:
    """Bland-Altman figures of ``n`` pairs: ``bias_mm`` (mean of fetalhc - sonographer), the SD of the
    differences, the limits of agreement, and the mean of both HCs' range."""

    n: int
    bias_mm: float
    sd_mm: float | None
    lower_loa_mm: float | None
    upper_loa_mm: float | None
    mean_abs_diff_mm: float


def agreement(pairs: Sequence[AgreementPair]) -> Agreement | None:
    """The Bland-Altman figures of the pairs (None for none; no SD or limits for a single pair)."""
    return agreement_of([p.hc_mm - p.sonographer_hc_mm for p in pairs])


def agreement_of(diffs: Sequence[float]) -> Agreement | None:
    """The Bland-Altman figures of these differences (mm; None for none; no SD or limits for a single one)."""
    if not diffs:
        return None
    bias = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else None
    return Agreement(len(diffs), round(bias, 3), round(sd, 3) if sd is not None else None,
                     round(bias - 1.96 * sd, 3) if sd is not None else None,
                     round(bias + 1.96 * sd, 3) if sd is not None else None,
                     round(statistics.fmean(abs(d) for d in diffs), 3))


def agreement_report(pairs: Sequence[AgreementPair]) -> dict[str, Any]:
    """Overall, per scanner model (of the study's report) and per study month (YYYY-MM)."""
    def grouped(key: Any) -> dict[str, Any]:
        groups: dict[str, list[AgreementPair]] = {}
        for p in pairs:
            groups.setdefault(key(p), []).append(p)
        return {k: asdict(agreement(v)) for k, v in sorted(groups.items())}  # type: ignore[arg-type]

    overall = agreement(pairs)
    return {
        "difference": "fetalhc minus sonographer HC, mm",
        "overall": asdict(overall) if overall else None,
        "by_scanner_model": grouped(lambda p: p.scanner_model or UNKNOWN_MODEL),
        "by_month": grouped(lambda p: p.study_date.strftime("%Y-%m") if p.study_date else UNKNOWN_MODEL),
    }


def reviewer_agreement(reviewed: Sequence[ReviewedHC]) -> dict[str, Any]:
    """The reviewers as a third reader: fetalhc minus reviewer over every confirmed row, sonographer minus reviewer
    where the study's report gives the sonographer's HC; overall, by scanner model and month, and decisions counted."""
    def section(rows: Sequence[ReviewedHC], first: str, value: Any) -> dict[str, Any]:
        def grouped(key: Any) -> dict[str, Any]:
            groups: dict[str, list[float]] = {}
            for r in rows:
                groups.setdefault(key(r), []).append(value(r) - r.reviewer_hc_mm)
            return {k: asdict(agreement_of(v)) for k, v in sorted(groups.items())}  # type: ignore[arg-type]

        overall = agreement_of([value(r) - r.reviewer_hc_mm for r in rows])
        decisions: dict[str, int] = {}
        for r in rows:
            decisions[r.decision] = decisions.get(r.decision, 0) + 1
        return {"difference": f"{first} minus reviewer HC, mm", "overall": asdict(overall) if overall else None,
                "decisions": decisions,
                "by_scanner_model": grouped(lambda r: r.scanner_model or UNKNOWN_MODEL),
                "by_month": grouped(lambda r: r.study_date.strftime("%Y-%m") if r.study_date else UNKNOWN_MODEL)}

    with_sonographer = [r for r in reviewed if r.sonographer_hc_mm is not None]
    return {"fetalhc_vs_reviewer": section(reviewed, "fetalhc", lambda r: r.hc_mm),
            "sonographer_vs_reviewer": section(with_sonographer, "sonographer", lambda r: r.sonographer_hc_mm)}


def draw_bland_altman(pairs: Sequence[AgreementPair], path: Path) -> Path:
    """A Bland-Altman plot (mean of the two HCs against their difference) with bias and limits, one colour
    per scanner model; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    models = sorted({p.scanner_model or UNKNOWN_MODEL for p in pairs})
    for model in models:
        mine = [p for p in pairs if (p.scanner_model or UNKNOWN_MODEL) == model]
        ax.scatter([(p.hc_mm + p.sonographer_hc_mm) / 2 for p in mine],
                   [p.hc_mm - p.sonographer_hc_mm for p in mine], s=14, alpha=0.7, label=f"{model} (n={len(mine)})")
    stats = agreement(pairs)
    if stats is not None:
        ax.axhline(stats.bias_mm, color="black", lw=1, label=f"bias {stats.bias_mm:+.2f} mm")
        if stats.lower_loa_mm is not None and stats.upper_loa_mm is not None:
            for loa in (stats.lower_loa_mm, stats.upper_loa_mm):
                ax.axhline(loa, color="black", lw=1, ls="--")
            ax.set_title(f"fetalhc vs sonographer HC: limits of agreement {stats.lower_loa_mm:+.1f} to "
                         f"{stats.upper_loa_mm:+.1f} mm (n={stats.n})", fontsize=10)
    ax.set_xlabel("mean of the two HCs (mm)")
    ax.set_ylabel("fetalhc - sonographer HC (mm)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
