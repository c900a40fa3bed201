"""Geometry (runtime): the skull ellipse and its fit, HC/BPD/OFD in mm with a quality score, the overlay PNG."""

from __future__ import annotations

from models import lazy_exports

_EXPORTS = {
    "ellipse": ("Ellipse", "fit_ellipse", "fit_ellipse_robust", "ramanujan_perimeter"),
    "biometry": ("Biometry", "HeadSizes", "hc_on_grid", "head_sizes", "measure_head", "measure_head_on_grid"),
    "overlay": ("overlay_png",),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__ = lazy_exports(__name__, _EXPORTS)
