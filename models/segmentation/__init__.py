"""Segmentation (runtime): the network, preprocessing, weights files, CPU backends, batched inference with flips."""

from __future__ import annotations

from models import lazy_exports

_EXPORTS = {
    "network": ("build_network", "pick_device"),
    "preprocess": ("prepare_input",),
    "weights": ("SHIPPED_WEIGHTS", "LoadedModel", "cached_model", "file_sha256", "load_weights", "save_weights"),
    "backends": ("Backend", "BackendUnavailable", "ForwardPass", "cached_forward", "forward_of", "make_forward",
                 "resolve_backend"),
    "segment": ("TTA_FLIPS", "SegmentedBatch", "finish_batch", "measure_images", "predict_logits", "segment_batch",
                "segment_images"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
