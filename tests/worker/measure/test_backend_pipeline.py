"""The pipeline's inference backend chosen by FETALHC_BACKEND, and the same HC through every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from models.backends import Backend, backend_available, cached_forward
from models.errors import ConfigError
from worker.core.settings import BackendName, Settings
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
