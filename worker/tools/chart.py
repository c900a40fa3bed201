"""Growth chart: a patient's HC points over the P3/P10/P50/P90/P97 curves of a standard."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.growth import GA_MAX_DAYS, GA_MIN_DAYS, centile_curves

CENTILES = (3, 10, 50, 90, 97)


def draw_growth_chart(rows: Sequence[dict[str, Any]], path: Path, standard: str = "intergrowth") -> Path:
    """Write a PNG of the rows' HC against the GA used for centiles (rows without GA are listed aside)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = np.linspace(GA_MIN_DAYS, GA_MAX_DAYS, 200)
    curves = centile_curves(standard, days, CENTILES)
    fig, ax = plt.subplots(figsize=(7, 5))
    for centile, values in curves.items():
        style = "-" if centile == 50 else ("--" if centile in (10, 90) else ":")
        ax.plot(days / 7, values, style, color="grey", lw=1.2)
        ax.annotate(f"P{centile:g}", (days[-1] / 7, values[-1]), fontsize=8, color="grey")
    points = [(r["ga_days"] / 7, r["hc_mm"], r.get("status")) for r in rows
              if r.get("ga_days") is not None and r.get("hc_mm") is not None]
    for weeks, hc, status in points:
        ax.plot(weeks, hc, "o", color="tab:red" if status == "needs_review" else "tab:blue")
    missing = sum(1 for r in rows if r.get("hc_mm") is not None and r.get("ga_days") is None)
    patients = sorted({str(r.get("patient_id")) for r in rows if r.get("patient_id")})
    title = f"Head circumference, {standard.upper() if standard == 'who' else 'INTERGROWTH-21st'}"
    ax.set(title=title + (f" - patient {patients[0]}" if len(patients) == 1 else ""),
           xlabel="gestational age (weeks)", ylabel="HC (mm)")
    if missing:
        ax.text(0.02, 0.97, f"{missing} measurement(s) without a dating GA not shown", transform=ax.transAxes,
                va="top", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
