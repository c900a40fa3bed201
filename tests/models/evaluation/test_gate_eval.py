"""``fetalhc eval-gate``'s report: both configurations (the gate alone, with a plane classifier) per source."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.evaluation.gate_eval import CONFIGURATIONS, OUTCOMES, evaluate_gate, format_report
from models.plane.head_plane import load_gate
from models.plane.sononet import expected_shapes, load_plane_classifier
from models.segmentation.weights import load_weights
from models.training.gate_data import phantom_items


def test_both_configurations_are_counted_per_source_from_one_measurement(tmp_path: Path) -> None:
    items = [i for i in phantom_items() if i.split == "val"][:6]  # drawn heads and ringless sections, in turn
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "random.npz", *[rng.normal(0, 0.1, s).astype(np.float32) for s in expected_shapes()])
    classifier = load_plane_classifier(tmp_path / "random.npz", "torch")
    report = evaluate_gate(load_gate(None), load_weights(), items, batch=4, classifier=classifier)

    assert report["configurations"] == list(CONFIGURATIONS) and report["classifier"] == classifier.sha256
    assert set(report["by_source"]) == {"phantom_head/val", "phantom_ringless/val"}
    for row in report["by_source"].values():
        assert row["n"] == 3
        for configuration in CONFIGURATIONS:
            assert sum(row[configuration][o] for o in OUTCOMES) == 3
        assert sum(row["plane_labels"].values()) <= 3
    heads = report["by_source"]["phantom_head/val"]
    assert heads["gate_alone"]["not_head"] == 0  # drawn heads with a skull ring pass the gate
    table = format_report(report)
    assert "gate alone" in table and "with classifier" in table and "phantom_head/val" in table

    alone = evaluate_gate(load_gate(None), load_weights(), items[:2], batch=2)
    assert alone["configurations"] == ["gate_alone"] and alone["classifier"] is None
    assert "with classifier" not in format_report(alone) and "none (FETALHC_PLANE_CLASSIFIER" in format_report(alone)
