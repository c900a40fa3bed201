"""Training (never imported by a worker): both trainings, their data (HC18 layout), losses, configs, pseudo-labels."""

from __future__ import annotations

from models import lazy_exports

_EXPORTS = {
    "hc18": ("Case", "load_cases", "split_by_subject", "subject_of"),
    "train_config": ("TrainConfig",),
    "gate_data": ("GateItem", "all_items"),
    "losses": ("EdgeWeightedDiceCELoss",),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
