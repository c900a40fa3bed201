"""The pipeline's inference backend chosen by FETALHC_BACKEND, and the same HC through every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from models.errors import ConfigError
from models.segmentation.backends import Backend, Precision, backend_available, cached_forward, cpu_has_native_bf16
from worker.core.settings import BackendName, PrecisionName, Settings
from worker.measure.pipeline import WorkItem, load_context, measure_rows


@pytest.fixture(scope="module", autouse=True)
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Exports go to a folder of this module's own; the process's forward passes are built afresh."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder))
        cached_forward.cache_clear()
        yield folder
    cached_forward.cache_clear()


def _settings(tmp_path: Path, backend: str) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}", spool_dir=tmp_path / "spool", device="cpu",
                    head_plane_gate="off", backend=backend)


def test_backend_setting_defaults_to_auto_and_refuses_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FETALHC_BACKEND", raising=False)
    assert Settings().backend is BackendName.AUTO
    monkeypatch.setenv("FETALHC_BACKEND", "tensorrt")
    with pytest.raises(ConfigError, match="FETALHC_BACKEND.*auto, torch, openvino, onnxruntime"):
        Settings()
    monkeypatch.setenv("FETALHC_BACKEND", "onnxruntime")
    assert Settings().backend is BackendName.ONNXRUNTIME


def test_setting_names_match_the_backends() -> None:
    assert {b.value for b in BackendName} == {b.value for b in Backend}


@pytest.mark.parametrize("name", ["torch", "openvino", "onnxruntime"])
def test_context_runs_the_chosen_backend(name: str, tmp_path: Path) -> None:
    if not backend_available(Backend(name)):
        pytest.skip(f"{name} is not installed")
    ctx = load_context(_settings(tmp_path, name))
    assert ctx.forward is not None and ctx.forward.backend is Backend(name)
    assert ctx.net is ctx.forward


def test_auto_on_cpu_is_an_exported_backend_when_one_is_installed(tmp_path: Path) -> None:
    ctx = load_context(_settings(tmp_path, "auto"))
    expected = Backend.OPENVINO if backend_available(Backend.OPENVINO) else (
        Backend.ONNXRUNTIME if backend_available(Backend.ONNXRUNTIME) else Backend.TORCH)
    assert ctx.forward.backend is expected


@pytest.mark.parametrize("name", ["openvino", "onnxruntime"])
def test_pipeline_measures_a_phantom_dicom_with_the_hc_of_torch(name: str, tmp_path: Path) -> None:
    if not backend_available(Backend(name)):
        pytest.skip(f"{name} is not installed")
    paths = [write_us_image(tmp_path / f"{i}.dcm", make_phantom(hc_mm=hc, spacing_mm=0.15, seed=i).image, 0.15)
             for i, hc in enumerate((150.0, 240.0))]
    reference = measure_rows(load_context(_settings(tmp_path, "torch")), [WorkItem(p) for p in paths])
    rows = measure_rows(load_context(_settings(tmp_path, name)), [WorkItem(p) for p in paths])
    for ref, row in zip(reference, rows):
        assert ref["status"] == row["status"] == "measured"
        assert abs(row["hc_mm"] - ref["hc_mm"]) <= 0.05, (name, ref["hc_mm"], row["hc_mm"])


def test_precision_setting_defaults_to_auto_and_refuses_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FETALHC_PRECISION", raising=False)
    assert Settings().precision is PrecisionName.AUTO
    monkeypatch.setenv("FETALHC_PRECISION", "fp8")
    with pytest.raises(ConfigError, match="FETALHC_PRECISION.*auto, f32, bf16"):
        Settings()
    monkeypatch.setenv("FETALHC_PRECISION", "f32")
    assert Settings().precision is PrecisionName.F32
    assert {p.value for p in PrecisionName} == {p.value for p in Precision}


def test_the_context_runs_the_precision_asked_for(tmp_path: Path) -> None:
    if not backend_available(Backend.OPENVINO):
        pytest.skip("openvino is not installed")
    ctx = load_context(_settings(tmp_path, "openvino").replace(precision="f32"))
    assert ctx.forward is not None and ctx.forward.precision is Precision.F32
    auto = load_context(_settings(tmp_path, "openvino"))
    assert auto.forward is not None
    assert auto.forward.precision is (Precision.BF16 if cpu_has_native_bf16() else Precision.F32)


@pytest.mark.parametrize("name", ["torch", "openvino"])
def test_batches_that_overlap_give_the_rows_of_one_scan_at_a_time(name: str, tmp_path: Path) -> None:
    # With batches of 2, the next batch's forward pass runs while this one is outlined (exported backends):
    # every item keeps its own result, in order, a damaged file among them included.
    if not backend_available(Backend(name)):
        pytest.skip(f"{name} is not installed")
    paths = [write_us_image(tmp_path / f"{i}.dcm", make_phantom(hc_mm=hc, spacing_mm=0.15, seed=i).image, 0.15)
             for i, hc in enumerate((120.0, 300.0, 180.0, 250.0))]
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"DICM" + bytes(200))
    paths.insert(2, broken)
    settings = _settings(tmp_path, name).replace(precision="f32")
    one_by_one = [measure_rows(load_context(settings.replace(batch_size=1)), [WorkItem(p)])[0] for p in paths]
    batched = measure_rows(load_context(settings.replace(batch_size=2)), [WorkItem(p) for p in paths])
    assert [r["path"] for r in batched] == [str(p) for p in paths]
    assert [r["status"] for r in batched] == [r["status"] for r in one_by_one]
    assert batched[2]["status"] == "failed"
    for single, row in zip(one_by_one, batched):
        assert row.get("hc_mm") == single.get("hc_mm")
