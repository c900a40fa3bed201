"""The head-plane gate's validation figures: ROC AUC, and what passes the threshold, per source."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.training.gate_data import HEAD, GateItem


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.concatenate([pos, neg])
    for v in np.unique(allv):  # average ranks of ties
        tie = allv == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def design_report(items: Sequence[GateItem], logits: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUC on the validation split (HC18 validation heads against every validation negative) and, per
    source and split, how many images pass the gate at ``threshold`` (a probability)."""
    logits = np.asarray(logits, np.float64)
    cut = float(np.log(threshold / (1 - threshold)))
    val = np.array([i.split == "val" and (i.label != HEAD or i.source == "hc18") for i in items])
    labels = np.array([i.label for i in items])
    by_source: dict[str, dict[str, Any]] = {}
    for key in sorted({(i.source, i.split) for i in items}):
        mask = np.array([(i.source, i.split) == key for i in items])
        passed = logits[mask] >= cut
        by_source[f"{key[0]}/{key[1]}"] = {
            "n": int(mask.sum()), "head_plane": bool(labels[mask][0] == HEAD),
            "pass_rate": round(float(passed.mean()), 4), "passed": int(passed.sum()),
        }
    return {"auc": round(roc_auc(logits[val], labels[val]), 4), "threshold": round(threshold, 4),
            "by_source": by_source}
