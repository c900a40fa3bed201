"""Measuring on the network's own grid: the same head as upsampling the logits to full size first."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dicom_io.phantom import make_phantom
from models.geometry.biometry import hc_on_grid, measure_head, measure_head_on_grid
from models.geometry.ellipse import Ellipse
from models.segmentation.preprocess import logits_to_full_size
from models.segmentation.segment import segment_with_members
from models.segmentation.weights import load_weights


def _logits_of(e: Ellipse, grid: tuple[int, int], image: tuple[int, int], sharpness: float = 0.4) -> np.ndarray:
    """Logits on a coarse grid over an image: positive inside ``e`` (image pixels), by signed elliptic distance."""
    rows, cols = np.mgrid[: grid[0], : grid[1]].astype(np.float64)
    ys = (rows + 0.5) * image[0] / grid[0] - 0.5
    xs = (cols + 0.5) * image[1] / grid[1] - 0.5
    c, s = math.cos(e.angle), math.sin(e.angle)
    u = ((xs - e.cx) * c + (ys - e.cy) * s) / e.a
    v = (-(xs - e.cx) * s + (ys - e.cy) * c) / e.b
    return ((1.0 - np.sqrt(u * u + v * v)) * e.b * sharpness).astype(np.float32)


def test_an_ellipse_on_a_coarse_grid_is_measured_in_image_pixels() -> None:
    truth = Ellipse.make(410, 260, 230, 170, 0.4)
    logits = _logits_of(truth, (256, 384), (540, 800))
    bio = measure_head_on_grid(logits, 0.15, 0.15, (540, 800))
    assert bio.hc_mm == pytest.approx(truth.perimeter * 0.15, rel=0.002)
    assert (bio.ellipse_px.cx, bio.ellipse_px.cy) == pytest.approx((410, 260), abs=0.3)
    assert bio.quality > 0.9 and not bio.flags
    assert hc_on_grid(logits, 0.15, 0.15, (540, 800)) == pytest.approx(bio.hc_mm, abs=1e-9)


def test_anisotropic_pixels_on_a_grid() -> None:
    truth = Ellipse.make(300, 200, 180, 120, 1.0)
    logits = _logits_of(truth, (192, 288), (400, 600))
    bio = measure_head_on_grid(logits, 0.1, 0.14, (400, 600))
    assert bio.hc_mm == pytest.approx(truth.scaled(0.1, 0.14).perimeter, rel=0.003)


def test_grid_and_full_size_give_the_same_head_on_the_networks_own_logits() -> None:
    # Tracing the zero level on the grid follows the bilinear logits, as upsampling them first does.
    model = load_weights()
    for seed, hc in ((3, 140.0), (4, 260.0)):
        image = make_phantom(hc_mm=hc, spacing_mm=0.15, seed=seed).image
        seg = segment_with_members(model.net, [image], model.input_size)[0]
        full = measure_head(logits_to_full_size(torch.from_numpy(seg.logits)[None], image.shape), 0.15, 0.15)
        grid = measure_head_on_grid(seg.logits, 0.15, 0.15, image.shape)
        assert grid.hc_mm == pytest.approx(full.hc_mm, abs=0.15)
        assert grid.quality == pytest.approx(full.quality, abs=0.02)


def test_other_components_do_not_pull_the_contour() -> None:
    truth = Ellipse.make(200, 150, 90, 70, 0.0)
    logits = _logits_of(truth, (150, 200), (300, 400))
    speck = _logits_of(Ellipse.make(360, 40, 12, 10, 0.0), (150, 200), (300, 400))
    both = np.maximum(logits, speck)
    assert measure_head_on_grid(both, 0.2, 0.2, (300, 400)).hc_mm == pytest.approx(
        measure_head_on_grid(logits, 0.2, 0.2, (300, 400)).hc_mm, abs=1e-6)


def test_outline_points_are_the_vertices_find_contours_traces() -> None:
    from scipy import ndimage
    from skimage import measure

    from models.geometry.biometry import outline_points

    rng = np.random.default_rng(7)
    for _ in range(20):
        field = ndimage.gaussian_filter(rng.normal(size=(60, 80)), 4) * 40
        field[:3], field[-3:], field[:, :3], field[:, -3:] = -5, -5, -5, -5
        blobs, count = ndimage.label(field > 0)  # side-connected, as marching squares joins pixels above the level
        if count == 0:
            continue
        biggest = blobs == 1 + int(np.argmax(np.bincount(blobs.ravel())[1:]))
        sub = np.where(biggest | (field <= 0), field, -10.0)
        traced = max(measure.find_contours(sub, 0.0), key=len)[:-1]  # a closed contour repeats its first point
        rows, cols = outline_points(sub, biggest, 0.0)
        ours = np.stack([rows, cols], axis=1)
        assert len(ours) == len(np.unique(np.round(traced, 9), axis=0))
        gap = np.abs(ours[:, None, :] - traced[None, :, :]).sum(axis=2).min(axis=1)
        assert gap.max() < 1e-6
