"""``fetalhc eval-gate``: the plane decision on held-out images, through the pipeline's own measuring path.

Every validation image (HC18 validation heads, validation groups of the negatives, made negatives of
validation subjects, drawn sections) and every ``other-heads`` image is measured as the pipeline
measures it (``models.segmentation.segment``: three flips, the fitted ellipse), then judged as the pipeline
judges it (``models.plane.gating.judge``) in both configurations: the gate alone, and the gate with SonoNet-16
when a classifier is given. The report gives the gate's ROC AUC and operating point and, per source and
configuration, what each image would be stored as (measured, needs_review, failed, not_head), the HC18
validation heads under 120 mm apart.
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
from models.plane.gating import judge
from models.plane.head_plane import PlaneVerdict
from models.plane.sononet import PlaneClassifier
from models.segmentation.segment import finish_batch, segment_batch
from models.segmentation.weights import SHIPPED_WEIGHTS, LoadedModel
from models.training.gate_data import HEAD, GateItem, all_items
from models.training.gate_prepare import item_image
from models.training.gate_report import roc_auc

OUTCOMES = ("measured", "needs_review", "failed", "not_head")
CONFIGURATIONS = ("gate_alone", "with_classifier")
EARLY_HC_MM = 120.0  # HC18 validation heads measured below this are reported apart (12-16 weeks)


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
                  net: Any = None, classifier: PlaneClassifier | None = None) -> dict[str, Any]:
    """Measure ``items`` once and judge them in each configuration; the gate's AUC over validation items and
    per-source outcomes (``by_source[source][configuration][outcome]``).

    ``net``: what segments (a ``models.segmentation.backends`` forward pass; default the torch network);
    ``classifier``: SonoNet-16 for the second configuration (None: the gate alone only).
    """
    recorder = _Recorder(gate)
    net = model.net if net is None else net
    configurations = CONFIGURATIONS if classifier is not None else CONFIGURATIONS[:1]
    probs: list[float] = []
    outcomes: dict[str, list[str]] = {c: [] for c in configurations}
    labels_seen: list[str | None] = []
    small: list[bool] = []
    for start in tqdm(range(0, len(items), batch), desc="eval-gate", mininterval=10):
        chunk = items[start:start + batch]
        images = [item_image(i) for i in chunk]
        spacing = [(i.pixel_size_mm or 0.15,) * 2 for i in chunk]
        segmented = segment_batch(net, images, spacing, model.input_size)
        measured = finish_batch(segmented)
        small += [isinstance(r, Biometry) and r.hc_mm < EARLY_HC_MM for r in measured]
        recorder.seen.clear()
        results, _ = judge(recorder, segmented, measured)
        blank = [getattr(r, "reason", None) == "blank_image" for r in results]  # the gate never saw these
        seen = iter(recorder.seen)
        probs += [0.0 if b else next(seen) for b in blank]
        outcomes["gate_alone"] += [outcome(r) for r in results]
        if classifier is not None:
            results, judgements = judge(gate, segmented, measured, classifier)
            outcomes["with_classifier"] += [outcome(r) for r in results]
            labels_seen += [j.plane.label.value if j is not None and j.plane is not None else None
                            for j in judgements]
    p = np.array(probs)
    labels = np.array([i.label for i in items])
    val = np.array([i.split == "val" and (i.label != HEAD or i.source == "hc18") for i in items])
    groups: dict[str, list[int]] = {}
    for k, i in enumerate(items):
        groups.setdefault(f"{i.source}/{i.split}", []).append(k)
        if i.source == "hc18" and i.split == "val" and small[k]:
            groups.setdefault(f"hc18/val HC<{EARLY_HC_MM:.0f}mm", []).append(k)
    by_source: dict[str, Any] = {}
    for name in sorted(groups):
        idx = groups[name]
        row: dict[str, Any] = {
            "n": len(idx), "head_plane": bool(labels[idx[0]] == HEAD),
            "passed_gate": int(sum(p[k] >= gate.threshold for k in idx)),
            "pass_rate": round(float(np.mean([p[k] >= gate.threshold for k in idx])), 4),
        }
        for c in configurations:
            counts = Counter(outcomes[c][k] for k in idx)
            row[c] = {o: counts.get(o, 0) for o in OUTCOMES}
        if classifier is not None:
            row["plane_labels"] = dict(Counter(labels_seen[k] for k in idx if labels_seen[k]).most_common(4))
        by_source[name] = row
    return {"design": gate.design, "threshold": round(gate.threshold, 4),
            "auc": round(roc_auc(p[val], labels[val]), 4) if val.any() else None,
            "classifier": classifier.sha256 if classifier is not None else None,
            "configurations": list(configurations), "by_source": by_source}


def held_out_items(shared: Path) -> list[GateItem]:
    """Validation and report-only items of the gate's data under ``shared``."""
    return [i for i in all_items(shared, SHIPPED_WEIGHTS.with_suffix(".split.json")) if i.split in ("val", "report")]


def format_report(report: dict[str, Any]) -> str:
    """A table for people: one line per source, kept (measured) / review / refused (not_head) / failed in each
    configuration."""
    configurations = report.get("configurations", ["gate_alone"])
    lines = [f"head-plane gate ({report['design']}): ROC AUC {report['auc']} on validation, "
             f"threshold {report['threshold']}; plane classifier: "
             + (f"SonoNet-16 {report['classifier'][:12]}" if report.get("classifier") else
                "none (FETALHC_PLANE_CLASSIFIER or --classifier: the second configuration)"),
             f"{'':39s}" + "".join(f"  {c.replace('_', ' '):^32s}" for c in configurations),
             f"{'source':28s} {'n':>5s} {'kind':>4s}"
             + "".join(f"  {'kept':>8s}{'review':>8s}{'refused':>8s}{'failed':>8s}" for _ in configurations)]
    for name, row in report["by_source"].items():
        kind = "head" if row["head_plane"] else "not"
        cells = "".join(f"  {row[c]['measured']:8d}{row[c]['needs_review']:8d}{row[c]['not_head']:8d}"
                        f"{row[c]['failed']:8d}" for c in configurations)
        lines.append(f"{name:28s} {row['n']:5d} {kind:>4s}{cells}")
    return "\n".join(lines)
