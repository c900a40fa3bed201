"""Head plane (runtime): is this a fetal head biometry plane? The gate, its network and features, its verdicts."""

from __future__ import annotations

from models import lazy_exports

_EXPORTS = {
    "verdict": ("HeadPlaneGate", "PlaneVerdict"),
    "head_plane": ("SHIPPED_GATE", "load_gate"),
    "gating": ("apply_gate", "finish_gated", "measure_gated"),
    "gate_io": ("TrainedGate", "read_gate", "write_gate"),
    "net": ("build_plane_net", "letterbox", "plane_logits"),
    "skull_echo": ("FEATURES", "skull_features"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
