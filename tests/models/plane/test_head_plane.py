"""The head-plane gate: skull-echo evidence, made negatives, the classifier's file, the shipped gate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from dicom_io.phantom import make_phantom
from models.errors import NotHeadPlane, WeightsError
from models.geometry.ellipse import Ellipse
from models.plane.gate_io import LogisticModel, TrainedGate, read_gate, write_gate
from models.plane.gating import measure_gated
from models.plane.head_plane import SHIPPED_GATE, load_gate
from models.plane.net import INPUT_SIZE, NET_KWARGS, build_plane_net, letterbox
from models.plane.skull_echo import FEATURES, skull_features
from models.segmentation.weights import load_weights
from models.training.gate_data import group_split
from models.training.gate_report import roc_auc
from models.training.gate_synth import make_view, ring_phantom
from models.training.train_gate import fit_logistic, threshold_from_heads

F = {name: i for i, name in enumerate(FEATURES)}


def filled_ellipse(seed: int = 0, shape: tuple[int, int] = (540, 800)) -> np.ndarray:
    """A bright filled ellipse in speckle, with no skull ring: a body section, not a head."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    inside = ((xs - 400) / 190.0) ** 2 + ((ys - 270) / 150.0) ** 2 < 1
    image = np.where(inside, 0.45, 0.15) * rng.rayleigh(1.0, shape) / 1.25
    return np.clip(ndimage.gaussian_filter(image, 1.0) * 255, 0, 255).astype(np.uint8)


def test_a_bright_ring_has_skull_evidence_and_a_filled_ellipse_has_none() -> None:
    head = make_phantom(seed=3)
    e = Ellipse.make(*head.outer)
    ring = skull_features(head.image, e)
    body = skull_features(filled_ellipse(), Ellipse.make(400, 270, 190, 150, 0.0))
    assert ring[F["has_ellipse"]] == body[F["has_ellipse"]] == 1.0
    assert ring[F["bright_fraction"]] > 0.8 > 0.2 > body[F["bright_fraction"]]
    assert ring[F["longest_bright_run"]] > 0.5 > body[F["longest_bright_run"]]
    assert ring[F["ring_minus_inner"]] > body[F["ring_minus_inner"]] + 0.2


def test_no_ellipse_gives_zero_features() -> None:
    out = skull_features(make_phantom().image, None)
    assert out.shape == (len(FEATURES),) and not out.any()


def test_made_views_take_the_skull_out() -> None:
    head = make_phantom(seed=4)
    e = Ellipse.make(*head.outer)
    before = skull_features(head.image, e)[F["bright_fraction"]]
    for kind in ("abdomen", "thorax", "femur"):
        made = make_view(kind, head.image, e, seed=1)
        assert made.shape == head.image.shape and made.dtype == np.uint8
        assert skull_features(made, e)[F["bright_fraction"]] < before - 0.4, kind


def test_drawn_sections_with_and_without_a_ring() -> None:
    with_ring, e = ring_phantom(1, ring=True)
    without, e2 = ring_phantom(1, ring=False)
    assert with_ring.shape == without.shape == (540, 800)
    assert skull_features(with_ring, e)[F["bright_fraction"]] > skull_features(without, e2)[F["bright_fraction"]]


def test_letterbox_keeps_the_aspect_of_the_picture() -> None:
    square = np.full((256, 256), 200, np.uint8)
    t = letterbox(square)
    assert t.shape == (1, *INPUT_SIZE)
    filled = (t[0] > 0).sum(dim=0)  # rows lit per column
    lit_cols = int((filled > 0).sum())
    assert lit_cols == pytest.approx(INPUT_SIZE[0], abs=1)  # square in, square out


def test_auc_and_logistic_fit_on_known_answers() -> None:
    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert roc_auc(np.array([0.1, 0.9]), np.array([1, 0])) == 0.0
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, (200, 2)), rng.normal(1, 1, (200, 2))])
    y = np.repeat([0, 1], 200)
    model = fit_logistic(x, y)
    assert roc_auc(model.logits(x), y) > 0.9
    assert model.weights[0] > 0 and model.weights[1] > 0


def test_threshold_lets_every_validation_head_through() -> None:
    logits = np.array([2.0, 3.5, 0.4, 5.0])
    t = threshold_from_heads(logits, margin=1.0)
    assert 1 / (1 + math.exp(-0.4)) > t == pytest.approx(1 / (1 + math.exp(0.6)))


def test_group_split_is_stable_and_one_in_five() -> None:
    groups = [f"g{i}" for i in range(2000)]
    val = [g for g in groups if group_split(g) == "val"]
    assert 300 < len(val) < 500
    assert [group_split(g) for g in groups] == [group_split(g) for g in groups]


def test_gate_file_round_trip(tmp_path: Path) -> None:
    net = build_plane_net(INPUT_SIZE).eval()
    echo = LogisticModel(np.zeros(len(FEATURES)), np.ones(len(FEATURES)), np.linspace(-1, 1, len(FEATURES)), 0.3)
    fusion = LogisticModel(np.zeros(2), np.ones(2), np.array([0.7, 1.2]), -0.1)
    path = tmp_path / "gate.pt"
    write_gate(path, net, INPUT_SIZE, dict(NET_KWARGS), echo, fusion, "fused", 0.25, {"note": "test"})
    gate = read_gate(path)
    head = make_phantom(seed=2)
    images, ellipses = [head.image, filled_ellipse()], [Ellipse.make(*head.outer), None]
    direct = TrainedGate(net, INPUT_SIZE, echo, fusion, "fused", 0.25).verdicts(images, ellipses)
    loaded = gate.verdicts(images, ellipses)
    assert gate.threshold == 0.25 and gate.design == "fused" and gate.meta == {"note": "test"}
    # float16 tensors in the file: the same probabilities to about 1e-2
    assert [v.probability for v in loaded] == pytest.approx([v.probability for v in direct], abs=2e-2)


def test_a_file_that_is_not_a_gate_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "gate.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot be loaded"):
        read_gate(bad)
    with pytest.raises(WeightsError, match="does not exist"):
        load_gate(str(tmp_path / "missing.pt"))


shipped = pytest.mark.skipif(not SHIPPED_GATE.is_file(), reason="no shipped head-plane gate yet")


@shipped
def test_shipped_gate_passes_a_bright_ring_and_refuses_a_filled_ellipse() -> None:
    gate = load_gate()
    model = load_weights()
    heads = [make_phantom(hc_mm=hc, spacing_mm=mm, angle=a, seed=s) for s, (hc, mm, a) in
             enumerate([(120.0, 0.12, 0.2), (200.0, 0.15, 1.4), (250.0, 0.2, 2.6)])]
    images = [h.image for h in heads] + [filled_ellipse(s) for s in range(3)]
    spacings = [(h.spacing_mm, h.spacing_mm) for h in heads] + [(0.15, 0.15)] * 3
    results = measure_gated(model.net, images, spacings, model.input_size, gate=gate)
    for head, result in zip(heads, results[:3]):
        assert not isinstance(result, Exception), result
        assert result.head_plane_score is not None and result.head_plane_score >= gate.threshold
        assert result.hc_mm == pytest.approx(head.hc_mm, rel=0.08)
    for result in results[3:]:
        assert isinstance(result, NotHeadPlane) and result.reason == "not_head_plane"
        assert result.score < result.threshold == gate.threshold


def test_preparing_gate_images_leaves_training_possible() -> None:
    import torch

    from models.training.gate_data import phantom_items
    from models.training.gate_prepare import prepare

    items = phantom_items()[:2]  # a drawn head and a drawn section without a ring
    prep = prepare(items, load_weights())
    assert prep.keys == [i.key for i in items] and prep.features.shape == (2, len(FEATURES))
    assert prep.ellipse(0) is not None
    assert torch.is_grad_enabled(), "preparing must not switch autograd off for the CNN training that follows"


def test_gate_cnn_through_openvino_scores_as_torch() -> None:
    from models.segmentation.backends import Backend, backend_available

    if not backend_available(Backend.OPENVINO):
        pytest.skip("openvino is not installed")
    torch_gate, exported = load_gate(None, "cpu", "torch"), load_gate(None, "cpu", "openvino")
    assert isinstance(exported, TrainedGate) and exported.forward is not None and torch_gate.forward is None
    heads = [make_phantom(hc_mm=hc, seed=s).image for hc, s in ((150.0, 1), (260.0, 2))]
    ring, _ = ring_phantom(3, ring=True)
    images = [*heads, ring, np.full((240, 320), 60, np.uint8)]
    ellipses = [Ellipse.make(400, 270, 200, 150, 0.2), Ellipse.make(400, 270, 250, 190, 0.5), None, None]
    a, b = torch_gate.logits(images, ellipses), exported.logits(images, ellipses)
    assert np.allclose(a["cnn"], b["cnn"], atol=1e-3) and np.allclose(a["fused"], b["fused"], atol=1e-3)
    assert exported.with_threshold(0.5).forward is exported.forward
