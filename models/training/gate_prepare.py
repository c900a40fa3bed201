"""Read every gate image once: the made negatives made, the skull ellipse fitted, features and thumbnails kept.

The ellipse is the one the pipeline would fit (the shipped segmentation network, one pass without
flips for speed); the result is cached in one ``.npz`` so that training runs again in seconds.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.errors import MeasurementError
from models.geometry.biometry import measure_head_on_grid
from models.geometry.ellipse import Ellipse
from models.plane.net import INPUT_SIZE, letterbox
from models.plane.skull_echo import FEATURES, skull_features
from models.segmentation.segment import segment_with_members
from models.segmentation.weights import LoadedModel
from models.training.gate_data import GateItem
from models.training.gate_synth import make_view, ring_phantom
from models.training.hc18 import Case

log = logging.getLogger(__name__)
THUMB_ZOOM = 1.5  # thumbnails kept larger than the network input, for crops and zooms in training


@dataclass
class Prepared:
    """Arrays over items: ``features`` (n, len(FEATURES)), ``thumbs`` (n, rows, cols) uint8,
    ``centres`` (n, 2) the fitted ellipse centre as a fraction of the thumbnail, ``ellipses`` (n, 5)
    the fitted ellipse in image pixels (cx, cy, a, b, angle); NaN where none was found."""

    keys: list[str]
    features: np.ndarray
    thumbs: np.ndarray
    centres: np.ndarray
    ellipses: np.ndarray

    def save(self, path: Path) -> None:
        """Write the cache."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, keys=np.array(self.keys), features=self.features, thumbs=self.thumbs,
                            centres=self.centres, ellipses=self.ellipses, feature_names=np.array(FEATURES))

    @classmethod
    def load(cls, path: Path) -> Prepared:
        """Read a cache written by ``save``."""
        blob = np.load(path)
        return cls(list(blob["keys"]), blob["features"], blob["thumbs"], blob["centres"], blob["ellipses"])

    def ellipse(self, i: int) -> Ellipse | None:
        """The fitted ellipse of item ``i`` (None: none was found)."""
        row = self.ellipses[i]
        return None if not np.isfinite(row).all() else Ellipse(*map(float, row))


def refresh_features(prep: Prepared, items: Sequence[GateItem]) -> Prepared:
    """The same cache with skull-echo features computed again from the images and cached ellipses."""
    feats = np.stack([skull_features(item_image(item), prep.ellipse(i))
                      for i, item in enumerate(tqdm(items, desc="features", mininterval=10))])
    return Prepared(prep.keys, feats, prep.thumbs, prep.centres, prep.ellipses)


def item_image(item: GateItem) -> np.ndarray:
    """The item's grey pixels; a made negative is made from its HC18 image and reference ellipse."""
    if item.made in ("phantom_head", "phantom_ringless"):
        return ring_phantom(zlib.crc32(item.key.encode()), ring=item.made == "phantom_head")[0]
    image = item.load()
    if item.made is None:
        return image
    ellipse = Case(item.path, item.pixel_size_mm or 0.1, None).reference_ellipse_px()
    return make_view(item.made, image, ellipse, seed=zlib.crc32(item.key.encode()))


def fitted_ellipse(model: LoadedModel, image: np.ndarray) -> Ellipse | None:
    """The skull ellipse the segmentation network finds (pixels), or None."""
    seg = segment_with_members(model.net, [image], model.input_size, "cpu", flips=((),))[0]
    try:  # outlined as the pipeline outlines (on the network's grid), so training sees inference's ellipses
        return measure_head_on_grid(seg.logits, 1.0, 1.0, seg.image_shape).ellipse_px
    except MeasurementError:
        return None


def prepare(items: Sequence[GateItem], model: LoadedModel, cached: Prepared | None = None) -> Prepared:
    """Features, thumbnails and ellipse centres of every item (taken from ``cached`` where it has them)."""
    size = (round(INPUT_SIZE[0] * THUMB_ZOOM), round(INPUT_SIZE[1] * THUMB_ZOOM))
    feats, thumbs, centres, ellipses = [], [], [], []
    known = {k: i for i, k in enumerate(cached.keys)} if cached is not None else {}
    for item in tqdm(items, desc="gate images", mininterval=10):
        if item.key in known and cached is not None:
            j = known[item.key]
            feats.append(cached.features[j])
            thumbs.append(cached.thumbs[j])
            centres.append(tuple(cached.centres[j]))
            ellipses.append(tuple(cached.ellipses[j]))
            continue
        image = item_image(item)
        ellipse = fitted_ellipse(model, image)
        feats.append(skull_features(image, ellipse))
        thumb = letterbox(image, size)[0].numpy()
        thumbs.append((thumb * 255).round().astype(np.uint8))
        centres.append(_centre_fraction(image.shape, size, ellipse))
        ellipses.append((ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle) if ellipse else (np.nan,) * 5)
    return Prepared([i.key for i in items], np.stack(feats), np.stack(thumbs), np.array(centres, np.float32),
                    np.array(ellipses, np.float64))


def _centre_fraction(shape: tuple[int, int], size: tuple[int, int], e: Ellipse | None) -> tuple[float, float]:
    """Where the ellipse centre falls in the letterboxed thumbnail, as (x, y) fractions."""
    if e is None:
        return (float("nan"), float("nan"))
    h, w = shape
    scale = min(size[0] / h, size[1] / w)
    r0, c0 = (size[0] - h * scale) / 2, (size[1] - w * scale) / 2
    return ((c0 + e.cx * scale) / size[1], (r0 + e.cy * scale) / size[0])
