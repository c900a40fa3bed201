"""Inference backends: selection rules, the cached ONNX export, and OpenVINO / ONNX Runtime against torch."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dicom_io.phantom import make_phantom
from models.errors import MeasurementError
from models.geometry.biometry import Biometry
from models.segmentation import backends
from models.segmentation.backends import (
    Backend,
    BackendUnavailable,
    OnnxRuntimeForward,
    TorchForward,
    Precision,
    backend_available,
    cpu_has_native_bf16,
    exported_model_path,
    make_forward,
    resolve_backend,
    resolve_precision,
)
from models.segmentation.preprocess import prepare_input
from models.segmentation.segment import measure_images, predict_member_logits
from models.segmentation.weights import SHIPPED_WEIGHTS, LoadedModel, load_weights

EXPORTED = [Backend.OPENVINO, Backend.ONNXRUNTIME]
HC_TOLERANCE_MM = 0.05


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return load_weights()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(scope="module")
def forwards(model: LoadedModel, cache_dir: Path) -> dict[Backend, backends.ForwardPass]:
    """One float32 forward pass per installed exported backend, sharing one export."""
    return {b: make_forward(model, b, cache_dir=cache_dir, threads=2, precision="f32")
            for b in EXPORTED if backend_available(b)}


@pytest.fixture(scope="module")
def bf16_forward(model: LoadedModel, cache_dir: Path) -> backends.ForwardPass:
    """OpenVINO in bfloat16, where this CPU runs it natively (AMX / AVX512-BF16)."""
    if not backend_available(Backend.OPENVINO) or not cpu_has_native_bf16():
        pytest.skip("OpenVINO with native bfloat16 is not available on this machine")
    return make_forward(model, "openvino", cache_dir=cache_dir, threads=2, precision="bf16")


def _forward(forwards: dict[Backend, backends.ForwardPass], backend: Backend) -> backends.ForwardPass:
    if backend not in forwards:
        pytest.skip(f"{backend.value} is not installed")
    return forwards[backend]


@pytest.fixture()
def fresh_availability() -> Iterator[None]:
    """Forget which packages import, before and after a test that fakes their absence."""
    backend_available.cache_clear()
    yield
    backend_available.cache_clear()


PHANTOMS = ((180.0, 0.15, 1), (250.0, 0.2, 2), (120.0, 0.12, 3))


@pytest.fixture(scope="module")
def phantoms() -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    images = [make_phantom(hc_mm=hc, spacing_mm=mm, angle=0.4 * seed, seed=seed).image for hc, mm, seed in PHANTOMS]
    return images, [(mm, mm) for _, mm, _ in PHANTOMS]


# -- selection --------------------------------------------------------------------------------------


def test_auto_picks_openvino_on_cpu_when_it_is_installed() -> None:
    if not backend_available(Backend.OPENVINO):
        pytest.skip("openvino is not installed")
    assert resolve_backend("auto", "cpu") is Backend.OPENVINO
    assert resolve_backend("auto", torch.device("cpu")) is Backend.OPENVINO


def test_auto_falls_back_to_onnxruntime_then_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = {Backend.OPENVINO: False, Backend.ONNXRUNTIME: True}
    monkeypatch.setattr(backends, "backend_available", lambda b: installed.get(b, True))
    assert resolve_backend("auto", "cpu") is Backend.ONNXRUNTIME
    installed[Backend.ONNXRUNTIME] = False
    assert resolve_backend("auto", "cpu") is Backend.TORCH


def test_cuda_runs_torch() -> None:
    # Resolution is a rule on the device's name: no CUDA device is needed to check it.
    assert resolve_backend("auto", "cuda") is Backend.TORCH
    assert resolve_backend("torch", "cuda:0") is Backend.TORCH
    assert resolve_backend("torch", "cpu") is Backend.TORCH
    with pytest.raises(BackendUnavailable, match="CPU only"):
        resolve_backend("openvino", "cuda")


def test_unknown_backend_names_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="'tensorrt'.*auto, torch, openvino, onnxruntime"):
        resolve_backend("tensorrt")


@pytest.mark.parametrize("backend", EXPORTED)
def test_explicit_backend_that_is_not_installed_is_a_clear_error(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, fresh_availability: None,
) -> None:
    monkeypatch.setitem(sys.modules, backend.value, None)  # its import now raises ImportError
    assert not backend_available(backend)
    with pytest.raises(BackendUnavailable, match=f"pip install {backend.value}") as err:
        resolve_backend(backend.value, "cpu")
    assert err.value.reason == "backend_unavailable"
    assert resolve_backend("auto", "cpu") is not backend


def test_auto_precision_is_bf16_only_for_openvino_on_a_cpu_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", Backend.OPENVINO) is Precision.BF16
    assert resolve_precision("auto", Backend.ONNXRUNTIME) is Precision.F32
    assert resolve_precision("auto", Backend.TORCH) is Precision.F32
    assert resolve_precision("f32", Backend.OPENVINO) is Precision.F32
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", Backend.OPENVINO) is Precision.F32
    assert resolve_precision("bf16", Backend.OPENVINO) is Precision.BF16  # asked for: emulated, but honoured
    with pytest.raises(ValueError, match="'fp8'.*auto, f32, bf16"):
        resolve_precision("fp8", Backend.OPENVINO)


def test_onnxruntime_refuses_bf16(model: LoadedModel, cache_dir: Path) -> None:
    if not backend_available(Backend.ONNXRUNTIME):
        pytest.skip("onnxruntime is not installed")
    with pytest.raises(BackendUnavailable, match="float32 only"):
        make_forward(model, "onnxruntime", cache_dir=cache_dir, precision="bf16")


# -- export cache -----------------------------------------------------------------------------------


def test_export_is_cached_by_model_version_and_reused(model: LoadedModel, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if not backend_available(Backend.ONNXRUNTIME):
        pytest.skip("onnxruntime is not installed")
    make_forward(model, "onnxruntime", cache_dir=tmp_path)
    path = exported_model_path(model, tmp_path)
    assert path.parent == tmp_path and model.model_version in path.name
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind

    def no_export(*_: object) -> bytes:
        raise AssertionError("exported again although the cache holds this model_version")

    monkeypatch.setattr(backends, "export_onnx", no_export)
    assert make_forward(model, "onnxruntime", cache_dir=tmp_path).backend is Backend.ONNXRUNTIME


def test_export_is_renamed_into_place_whole(model: LoadedModel, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    real_replace = os.replace

    def replace(src: str, dst: str | Path) -> None:
        # When the cache file appears, the complete export is already written under a temporary name beside it.
        assert not Path(dst).exists() and Path(src).parent == Path(dst).parent
        seen.append(Path(src).read_bytes())
        real_replace(src, dst)

    monkeypatch.setattr(backends.os, "replace", replace)
    data = backends.exported_onnx(model, tmp_path)
    assert seen == [data] and exported_model_path(model, tmp_path).read_bytes() == data


def test_damaged_cache_file_is_exported_again(model: LoadedModel, tmp_path: Path) -> None:
    if not backend_available(Backend.ONNXRUNTIME):
        pytest.skip("onnxruntime is not installed")
    path = exported_model_path(model, tmp_path)
    path.write_bytes(b"not an onnx model")
    forward = make_forward(model, "onnxruntime", cache_dir=tmp_path)
    assert forward(torch.zeros(1, 1, *model.input_size)).shape == (1, 1, *model.input_size)
    assert path.stat().st_size > 1_000_000


def test_unwritable_cache_keeps_the_export_in_memory(model: LoadedModel, tmp_path: Path) -> None:
    if not backend_available(Backend.ONNXRUNTIME):
        pytest.skip("onnxruntime is not installed")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    forward = make_forward(model, "onnxruntime", cache_dir=blocker / "cache")  # cannot be created under a file
    assert forward(np.zeros((2, 1, *model.input_size), np.float32)).shape == (2, 1, *model.input_size)


def test_default_cache_follows_xdg_cache_home(model: LoadedModel, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert exported_model_path(model).parent == tmp_path / "fetalhc" / "models"


# -- equivalence ------------------------------------------------------------------------------------


def test_torch_forward_is_the_network(model: LoadedModel, phantoms: tuple[list[np.ndarray], list]) -> None:
    batch = torch.stack([prepare_input(img, model.input_size) for img in phantoms[0][:2]])
    forward = make_forward(model, "torch")
    assert isinstance(forward, TorchForward)
    assert torch.equal(predict_member_logits(forward, batch), predict_member_logits(model.net, batch))


@pytest.mark.parametrize("backend", EXPORTED)
def test_exported_logits_match_torch(backend: Backend, model: LoadedModel, forwards: dict,
                                     phantoms: tuple[list[np.ndarray], list]) -> None:
    forward = _forward(forwards, backend)
    batch = torch.stack([prepare_input(img, model.input_size) for img in phantoms[0]])
    ref = predict_member_logits(model.net, batch)
    out = predict_member_logits(forward, batch)  # 3 flips x 3 images in one exported call
    assert out.shape == ref.shape == (3, 3, 1, *model.input_size)
    # Logits reach +-90 here; float32 convolutions in another order differ by about 1e-5 of that.
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-3), float((out - ref).abs().max())
    assert float((out.sigmoid() - ref.sigmoid()).abs().max()) < 1e-3


@pytest.mark.parametrize("backend", EXPORTED)
def test_exported_hc_matches_torch_on_phantoms(backend: Backend, model: LoadedModel, forwards: dict,
                                               phantoms: tuple[list[np.ndarray], list]) -> None:
    forward = _forward(forwards, backend)
    images, spacings = phantoms
    blank = np.full((300, 400), 90, np.uint8)
    ref = measure_images(model.net, [*images, blank], [*spacings, (0.2, 0.2)], model.input_size)
    out = measure_images(forward, [*images, blank], [*spacings, (0.2, 0.2)], model.input_size)
    for r, o in zip(ref[:3], out[:3]):
        assert isinstance(r, Biometry) and isinstance(o, Biometry)
        assert abs(o.hc_mm - r.hc_mm) <= HC_TOLERANCE_MM
        assert abs(o.bpd_mm - r.bpd_mm) <= HC_TOLERANCE_MM
        assert o.quality == pytest.approx(r.quality, abs=1e-3) and o.flags == r.flags
    assert isinstance(out[3], MeasurementError) and out[3].reason == "blank_image"


def test_openvino_bf16_hc_matches_torch_on_phantoms(model: LoadedModel, bf16_forward: backends.ForwardPass,
                                                    phantoms: tuple[list[np.ndarray], list]) -> None:
    forward = bf16_forward
    assert forward.precision is Precision.BF16
    images, spacings = phantoms
    ref = measure_images(model.net, images, spacings, model.input_size)
    out = measure_images(forward, images, spacings, model.input_size)
    for r, o in zip(ref, out):
        assert isinstance(r, Biometry) and isinstance(o, Biometry)
        assert abs(o.hc_mm - r.hc_mm) <= HC_TOLERANCE_MM, (r.hc_mm, o.hc_mm)
        assert o.flags == r.flags


def test_openvino_compiles_each_batch_size_once_with_a_static_shape(model: LoadedModel, forwards: dict,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    forward = _forward(forwards, Backend.OPENVINO)
    batch = torch.randn(5, 1, *model.input_size, generator=torch.Generator().manual_seed(1))
    dynamic = forward._requests[None]
    dynamic.infer({0: batch.numpy()})
    reference = torch.from_numpy(np.array(dynamic.get_output_tensor(0).data))
    first = forward(batch)
    assert 5 in forward._requests and forward._request_for(5) is forward._requests[5]
    assert torch.allclose(first, reference, atol=1e-3) and torch.equal(forward(batch), first)
    monkeypatch.setattr(backends, "MAX_STATIC_SHAPES", 0)  # full: other sizes run on the dynamic model
    assert forward._request_for(7) is dynamic
    assert forward(batch[:2]).shape == (2, 1, *model.input_size)


def test_large_batches_run_in_chunks(model: LoadedModel, forwards: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    forward = _forward(forwards, Backend.ONNXRUNTIME)
    batch = torch.randn(3, 1, *model.input_size, generator=torch.Generator().manual_seed(0))
    whole = forward(batch)
    monkeypatch.setattr(backends, "MAX_EXPORTED_BATCH", 2)
    assert torch.allclose(forward(batch), whole, atol=1e-5)


def test_exported_forward_refuses_another_input_size(model: LoadedModel, forwards: dict) -> None:
    forward = _forward(forwards, Backend.ONNXRUNTIME)
    assert isinstance(forward, OnnxRuntimeForward)
    with pytest.raises(ValueError, match=f"\\(N, 1, {model.input_size[0]}, {model.input_size[1]}\\)"):
        forward(np.zeros((1, 1, 64, 96), np.float32))


# -- real HC18 validation images --------------------------------------------------------------------


@pytest.mark.hc18
@pytest.mark.parametrize("backend", [*EXPORTED, "openvino-bf16"])
def test_exported_hc_matches_torch_on_hc18_validation_images(backend: Backend | str, hc18_dir: Path,
                                                             model: LoadedModel, forwards: dict,
                                                             request: pytest.FixtureRequest) -> None:
    from models.training.hc18 import load_cases

    if backend == "openvino-bf16":
        forward = request.getfixturevalue("bf16_forward")
    else:
        forward = _forward(forwards, backend)
    val = set(json.loads((SHIPPED_WEIGHTS.parent / "hc18_unet.split.json").read_text())["val"])
    cases = [c for c in load_cases(hc18_dir) if c.name in val][:4]
    assert len(cases) == 4
    images = [c.load_image() for c in cases]
    spacings = [(c.pixel_size_mm, c.pixel_size_mm) for c in cases]
    ref = measure_images(model.net, images, spacings, model.input_size)
    out = measure_images(forward, images, spacings, model.input_size)
    for case, r, o in zip(cases, ref, out):
        assert isinstance(r, Biometry) and isinstance(o, Biometry), case.name
        assert abs(o.hc_mm - r.hc_mm) <= HC_TOLERANCE_MM, (case.name, r.hc_mm, o.hc_mm)
