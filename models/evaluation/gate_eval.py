"""``fetalhc eval-gate``: the head-plane gate on held-out images, through the pipeline's own measuring path.

Every validation image (HC18 validation heads, validation groups of the negatives, made negatives of
validation subjects, drawn sections) and every ``other-heads`` image is measured as the pipeline
measures it (``models.plane.gating.measure_gated``: three flips, the fitted ellipse, then the gate), and
the report gives the ROC AUC, the operating point and, per source, how many passed the gate and what
each image's outcome was (measured, needs_review, failed, not_head).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.errors import NotHeadPlane
from models.geometry.biometry import Biometry
from models.plane.gate_io import TrainedGate
from models.plane.gating import measure_gated
from models.plane.head_plane import PlaneVerdict
from models.segmentation.weights import SHIPPED_WEIGHTS, LoadedModel
from models.training.gate_data import HEAD, GateItem, all_items
from models.training.gate_prepare import item_image
from models.training.gate_report import roc_auc

OUTCOMES = ("measured", "needs_review", "failed", "not_head")


class _Recorder(TrainedGate):
    """The gate under test, keeping the probability of every image it was asked about."""

    def __init__(self, gate: TrainedGate) -> None:
        super().__init__(gate.net, gate.input_size, gate.echo, gate.fusion, gate.design, gate.threshold, gate.device,
                         gate.meta)
        self.forward = gate.forward
        self.seen: list[float] = []

    def verdicts(self, images: Sequence[np.ndarray], ellipses_px: Sequence[Any]) -> list[PlaneVerdict]:
        out = super().verdicts(images, ellipses_px)
        self.seen.extend(v.probability for v in out)
        return out


def outcome(result: Biometry | Exception) -> str:
    """The pipeline status a single image's result would get."""
    if isinstance(result, Biometry):
        return "needs_review" if result.needs_review else "measured"
    return "not_head" if isinstance(result, NotHeadPlane) else "failed"


def evaluate_gate(gate: TrainedGate, model: LoadedModel, items: Sequence[GateItem], batch: int = 8,
                  net: Any = None) -> dict[str, Any]:
    """Measure ``items`` with the gate on; the AUC over validation items and per-source outcomes.

    ``net``: what segments (a ``models.segmentation.backends`` forward pass; default the torch network).
    """
    recorder = _Recorder(gate)
    net = model.net if net is None else net
    probs: list[float] = []
    outcomes: list[str] = []
    for start in tqdm(range(0, len(items), batch), desc="eval-gate", mininterval=10):
        chunk = items[start:start + batch]
        images = [item_image(i) for i in chunk]
        spacing = [(i.pixel_size_mm or 0.15,) * 2 for i in chunk]
        recorder.seen.clear()
        results = measure_gated(net, images, spacing, model.input_size, gate=recorder)
        blank = [getattr(r, "reason", None) == "blank_image" for r in results]  # the gate never saw these
        seen = iter(recorder.seen)
        probs += [0.0 if b else next(seen) for b in blank]
        outcomes += [outcome(r) for r in results]
    p = np.array(probs)
    labels = np.array([i.label for i in items])
    val = np.array([i.split == "val" and (i.label != HEAD or i.source == "hc18") for i in items])
    by_source: dict[str, Any] = {}
    for key in sorted({(i.source, i.split) for i in items}):
        mask = [(i.source, i.split) == key for i in items]
        idx = [k for k, m in enumerate(mask) if m]
        counts = Counter(outcomes[k] for k in idx)
        by_source[f"{key[0]}/{key[1]}"] = {
            "n": len(idx), "head_plane": bool(labels[idx[0]] == HEAD),
            "passed_gate": int(sum(p[k] >= gate.threshold for k in idx)),
            "pass_rate": round(float(np.mean([p[k] >= gate.threshold for k in idx])), 4),
            **{o: counts.get(o, 0) for o in OUTCOMES},
        }
    return {"design": gate.design, "threshold": round(gate.threshold, 4),
            "auc": round(roc_auc(p[val], labels[val]), 4) if val.any() else None, "by_source": by_source}


def held_out_items(shared: Path) -> list[GateItem]:
    """Validation and report-only items of the gate's data under ``shared``."""
    return [i for i in all_items(shared, SHIPPED_WEIGHTS.with_suffix(".split.json")) if i.split in ("val", "report")]


def format_report(report: dict[str, Any]) -> str:
    """A table for people: one line per source."""
    lines = [f"head-plane gate ({report['design']}): ROC AUC {report['auc']} on validation, "
             f"threshold {report['threshold']}",
             f"{'source':28s} {'n':>5s} {'kind':>9s} {'passed':>7s} " + " ".join(f"{o:>12s}" for o in OUTCOMES)]
    for name, row in report["by_source"].items():
        kind = "head" if row["head_plane"] else "not head"
        lines.append(f"{name:28s} {row['n']:5d} {kind:>9s} {row['pass_rate']:7.1%} "
                     + " ".join(f"{row[o]:12d}" for o in OUTCOMES))
    return "\n".join(lines)
