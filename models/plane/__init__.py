"""Plane recognition (runtime): is this a fetal head biometry plane, and which standard plane is it? The gate, its
network and features, SonoNet-16 (the plane classifier), and the one decision that joins them."""

from __future__ import annotations

from models import lazy_exports

_EXPORTS = {
    "verdict": ("HeadPlaneGate", "PlaneVerdict"),
    "head_plane": ("SHIPPED_GATE", "load_gate"),
    "gating": ("PLANE_UNCERTAIN", "PlaneJudgement", "finish_gated", "finish_judged", "judge",
               "measure_gated"),
    "decision": ("PlaneDecision", "PlaneEvidence", "PlaneOutcome", "PlanePolicy", "decide"),
    "classes": ("PlaneClass",),
    "sononet": ("PlaneClassifier", "PlaneProbabilities", "load_plane_classifier", "plane_classifier_problem"),
    "gate_io": ("TrainedGate", "read_gate", "write_gate"),
    "net": ("build_plane_net", "letterbox", "plane_logits"),
    "skull_echo": ("FEATURES", "skull_features"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
