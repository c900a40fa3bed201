"""The forward-pass benchmark: one row per backend and batch size, unavailable backends reported, not raised."""

from __future__ import annotations

import pytest

from models.evaluation.backend_bench import bench_forward
from models.segmentation import backends
from models.segmentation.backends import Backend
from models.segmentation.weights import LoadedModel


@pytest.fixture(scope="module")
def tiny_model() -> LoadedModel:
    """A small network at a small input size: the benchmark's bookkeeping, not its speed, is under test."""
    from models.segmentation.network import build_network

    net = build_network("unet", channels=[4, 8], strides=[2], num_res_units=0).eval()
    return LoadedModel(net=net, arch="unet", input_size=(32, 48), model_name="tiny", model_version="0" * 64, meta={})


def test_rows_per_backend_and_batch_size(tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "backend_available", lambda b: b is not Backend.OPENVINO)
    rows = bench_forward(tiny_model, backends=("torch", "openvino", "tensorrt"), batch_sizes=(1, 2),
                         repeats=2, warmup=0)
    assert [(r.backend, r.batch_size) for r in rows] == [("torch", 1), ("torch", 2), ("openvino", 1),
                                                         ("openvino", 2), ("tensorrt", 1), ("tensorrt", 2)]
    for row in rows[:2]:
        assert row.error is None and row.flips == 3 and row.repeats == 2
        assert 0 < row.best_seconds_per_image <= row.seconds_per_image
    assert "pip install openvino" in rows[2].error and rows[2].seconds_per_image is None
    assert "choose one of" in rows[4].error
    assert set(rows[0].as_dict()) >= {"backend", "batch_size", "seconds_per_image", "load_average", "error"}


def test_auto_rows_name_the_backend_auto_chose(tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "backend_available", lambda b: b in (Backend.TORCH, Backend.AUTO))
    (row,) = bench_forward(tiny_model, backends=("auto",), batch_sizes=(1,), repeats=1, warmup=0)
    assert row.backend == "torch" and row.error is None


def test_repeats_must_be_positive(tiny_model: LoadedModel) -> None:
    with pytest.raises(ValueError, match="repeats"):
        bench_forward(tiny_model, repeats=0)
