"""Inference with the shipped weights: batched measurement, refusals of blank and noise images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicom_io.phantom import make_phantom
from models.errors import MeasurementError
from models.segmentation.segment import measure_images, predict_logits, segment_images
from models.segmentation.weights import load_weights


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_weights()


def test_batched_measurement_keeps_order_and_refuses_blank_and_noise(model) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    small = make_phantom(shape=(300, 420), hc_mm=110.0, spacing_mm=0.12, seed=5)
    large = make_phantom(hc_mm=250.0, spacing_mm=0.2, angle=2.0, seed=6)
    blank = np.full((300, 400), 90, np.uint8)
    noise = rng.rayleigh(40, (540, 800)).clip(0, 255).astype(np.uint8)
    images = [small.image, blank, large.image, noise]
    spacings = [(0.12, 0.12), (0.2, 0.2), (0.2, 0.2), (0.15, 0.15)]

    results = measure_images(model.net, images, spacings, model.input_size)

    assert len(results) == 4
    assert results[0].hc_mm == pytest.approx(small.hc_mm, rel=0.08)
    assert isinstance(results[1], MeasurementError) and results[1].reason == "blank_image"
    assert results[2].hc_mm == pytest.approx(large.hc_mm, rel=0.08)
    assert isinstance(results[3], MeasurementError) and results[3].reason == "no_head_found"
    for bio in (results[0], results[2]):
        assert 0 < bio.quality <= 1 and bio.tta_spread_mm is not None


def test_probability_maps_come_back_at_each_images_size(model) -> None:  # type: ignore[no-untyped-def]
    a = make_phantom(shape=(200, 260), seed=1).image
    b = make_phantom(shape=(540, 800), seed=2).image
    probs = segment_images(model.net, [a, b], model.input_size)
    assert [p.shape for p in probs] == [a.shape, b.shape]
    assert all(0.0 <= float(p.min()) and float(p.max()) <= 1.0 for p in probs)


def test_flip_averaging_is_symmetric(model) -> None:  # type: ignore[no-untyped-def]
    # With horizontal+vertical flips averaged, mirroring the input mirrors the output exactly.
    x = torch.randn(1, 1, *model.input_size)
    flips = ((), (3,))
    y = predict_logits(model.net, x, flips)
    y_mirror = predict_logits(model.net, torch.flip(x, (3,)), flips)
    assert torch.allclose(torch.flip(y_mirror, (3,)), y, atol=1e-4)
