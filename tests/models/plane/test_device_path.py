"""The batched device path (models.plane.device, models.segmentation.device, models.geometry.batched) on CPU torch:
the same HC (within 0.05 mm), flags, quality, head-plane score and decision as the NumPy path."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_io.phantom import make_phantom
from models.geometry.batched import largest_components, measure_grid, outside
from models.geometry.biometry import Biometry
from models.plane.device import measure_on_device, skull_features_on_device
from models.plane.gating import finish_judged
from models.plane.head_plane import load_gate
from models.plane.skull_echo import skull_features
from models.segmentation.segment import segment_batch
from models.segmentation.weights import SHIPPED_WEIGHTS, cached_model

HC_TOLERANCE_MM = 0.05
NEGATIVES = Path(__file__).resolve().parents[3].parent / "shared" / "us-negatives"


@pytest.fixture(scope="module")
def model():  # noqa: ANN201 - LoadedModel
    return cached_model(None, "cpu")


@pytest.fixture(scope="module")
def gate():  # noqa: ANN201 - TrainedGate
    return load_gate()


def _compare(model, gate, images: list[np.ndarray], spacings: list[tuple[float, float]]) -> list[Biometry]:  # noqa: ANN001
    ref, ref_judged = finish_judged(segment_batch(model.net, images, spacings, model.input_size), gate)
    frames = [torch.from_numpy(np.ascontiguousarray(im).copy()) for im in images]
    out, out_judged = measure_on_device(model.net, frames, spacings, model.input_size, gate)
    measured = []
    for i, (r, o) in enumerate(zip(ref, out)):
        assert type(r) is type(o), (i, r, o)
        if isinstance(r, Biometry):
            assert isinstance(o, Biometry)
            assert abs(r.hc_mm - o.hc_mm) <= HC_TOLERANCE_MM, (i, r.hc_mm, o.hc_mm)
            assert (r.flags, r.quality, r.head_plane_score, r.tta_spread_mm) == (
                o.flags, o.quality, o.head_plane_score, o.tta_spread_mm), i
            assert abs(r.ellipse_px.a - o.ellipse_px.a) < 1e-3 and abs(r.bpd_mm - o.bpd_mm) < 1e-3
            measured.append(o)
        else:
            assert (getattr(r, "reason", None), str(r)) == (getattr(o, "reason", None), str(o)), i
        rj, oj = ref_judged[i], out_judged[i]
        assert (rj is None) == (oj is None)
        if rj is not None and rj.decision is not None:
            assert rj.decision.outcome == oj.decision.outcome, i
    return measured


def test_same_results_as_the_numpy_path_on_phantoms_noise_and_blank(model, gate) -> None:  # noqa: ANN001
    images = [make_phantom(hc_mm=90 + 37 * i % 260, seed=i, angle=0.37 * i).image for i in range(6)]
    spacings = [(0.15, 0.15) if i % 2 else (0.15, 0.17) for i in range(6)]  # anisotropic pixels too
    images.append(make_phantom(shape=(400, 500), hc_mm=260, seed=3).image)  # another size; cut by the border
    spacings.append((0.15, 0.15))
    images.append((np.random.default_rng(0).random((540, 800)) * 60).astype(np.uint8))  # speckle: no head
    images.append(np.full((300, 400), 7, np.uint8))  # blank
    spacings += [(0.2, 0.2), (0.2, 0.2)]
    measured = _compare(model, gate, images, spacings)
    assert len(measured) >= 5


def test_without_a_gate_the_flips_quality_and_errors_match(model) -> None:  # noqa: ANN001
    images = [make_phantom(hc_mm=150 + 40 * i, seed=10 + i).image for i in range(3)]
    spacings = [(0.12, 0.12)] * 3
    ref, _ = finish_judged(segment_batch(model.net, images, spacings, model.input_size))
    out, _ = measure_on_device(model.net, [torch.from_numpy(im.copy()) for im in images], spacings, model.input_size)
    for r, o in zip(ref, out):
        assert isinstance(r, Biometry) and isinstance(o, Biometry)
        assert abs(r.hc_mm - o.hc_mm) <= HC_TOLERANCE_MM and r.quality == o.quality and r.flags == o.flags


@pytest.mark.skipif(not (NEGATIVES / "manifest.csv").is_file(), reason="../shared/us-negatives is not here")
def test_same_decisions_on_real_non_head_images(model, gate) -> None:  # noqa: ANN001
    from PIL import Image

    with (NEGATIVES / "manifest.csv").open() as fh:
        files = [NEGATIVES / r["file"] for r in csv.DictReader(fh)][:6]
    images = [np.asarray(Image.open(f).convert("L")) for f in files]
    _compare(model, gate, images, [(0.2, 0.2)] * len(images))


@pytest.mark.hc18
def test_same_results_on_hc18_validation_images(model, gate, hc18_dir: Path) -> None:  # noqa: ANN001
    from PIL import Image

    val = json.loads((SHIPPED_WEIGHTS.parent / "hc18_unet.split.json").read_text())["val"][:16]
    with (hc18_dir / "training_set_pixel_size_and_HC.csv").open() as fh:
        pixel = {r[0]: float(r[1]) for r in csv.reader(fh) if r and r[0] != "filename"}
    images = [np.asarray(Image.open(hc18_dir / "training_set" / name)) for name in val]
    measured = _compare(model, gate, images, [(pixel[n], pixel[n]) for n in val])
    assert len(measured) >= 12


def test_torch_components_and_outside_match_opencv() -> None:
    rng = np.random.default_rng(1)
    fields = torch.from_numpy(np.stack([
        np.asarray(torch.nn.functional.avg_pool2d(torch.from_numpy(rng.standard_normal((1, 44, 64))), 5, 1, 2))[0]
        for _ in range(12)]))
    fg = fields > 0.05
    native = largest_components(fg, native=True)
    assert torch.equal(largest_components(fg, native=False), native)
    padded = torch.nn.functional.pad(native, (1, 1, 1, 1), value=False)
    assert torch.equal(outside(padded, native=False), outside(padded, native=True))
    ring = torch.zeros(1, 30, 30, dtype=torch.bool)  # a ring with a hole, and a spiral-free snake
    ring[0, 5:25, 5:25] = True
    ring[0, 10:20, 10:20] = False
    assert not outside(torch.nn.functional.pad(ring, (1, 1, 1, 1)), native=False)[0, 15, 15]


def test_the_torch_formulation_measures_as_opencv_labelling(model) -> None:  # noqa: ANN001
    from models.segmentation.segment import segment_with_members

    images = [make_phantom(hc_mm=hc, seed=s).image for hc, s in ((140, 1), (230, 2))]
    segs = segment_with_members(model.net, images, model.input_size)
    logits = torch.from_numpy(np.stack([s.logits for s in segs]))
    shapes = torch.tensor([im.shape for im in images])
    spacing = torch.tensor([(0.15, 0.15)] * 2)
    a = measure_grid(logits, shapes, spacing, torch.ones(2, dtype=torch.bool), native_components=True)
    b = measure_grid(logits, shapes, spacing, torch.ones(2, dtype=torch.bool), native_components=False)
    assert torch.equal(a.error, b.error)
    assert torch.allclose(a.ellipse_mm, b.ellipse_mm, atol=1e-9) and torch.allclose(a.iou, b.iou)


def test_skull_features_match_numpy() -> None:
    from models.geometry.ellipse import Ellipse

    ph = [make_phantom(hc_mm=hc, seed=s, angle=0.5 * s) for hc, s in ((150, 1), (260, 2), (330, 3))]
    ellipses = [Ellipse.make(*p.outer) for p in ph]
    ellipses[2] = Ellipse.make(ellipses[2].cx + 300, ellipses[2].cy, ellipses[2].a, ellipses[2].b, 0.1)  # half out
    frames = [torch.from_numpy(p.image.copy()) for p in ph]
    params = torch.tensor([[e.cx, e.cy, e.a, e.b, e.angle] for e in ellipses], dtype=torch.float64)
    got = skull_features_on_device(frames, params, torch.tensor([True, True, True])).numpy()
    want = np.stack([skull_features(p.image, e) for p, e in zip(ph, ellipses)])
    np.testing.assert_allclose(got, want, atol=2e-3)
    none = skull_features_on_device(frames[:1], params[:1], torch.tensor([False])).numpy()
    assert not none.any()
