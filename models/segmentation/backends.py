"""Inference backends for the segmentation network: PyTorch, or its ONNX export run by OpenVINO or ONNX Runtime.

Every backend is a ``ForwardPass``: a callable taking a (N, 1, H, W) float32 batch (NumPy array or
torch tensor, at the model's input size) and returning the logits as a (N, 1, H, W) torch tensor.
``models.segmentation.segment`` accepts one wherever it accepts the torch network.

The exported model is derived from the weights on first use (``torch.onnx.export`` of the loaded
network, dynamic batch axis, the model's input size) and cached by ``model_version`` (the weights
file's sha256) in ``$XDG_CACHE_HOME/fetalhc/models`` or a given folder; it is never downloaded.

Example:
    >>> from models.segmentation.weights import load_weights
    >>> model = load_weights()
    >>> forward = make_forward(model, "auto")           # OpenVINO on CPU when it is installed
    >>> measure_images(forward, images, spacings, model.input_size)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib
import io
import logging
import os
import tempfile
import threading
import warnings
from enum import Enum
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from models.errors import FetalHCError
from models.segmentation.weights import LoadedModel, cached_model

log = logging.getLogger(__name__)

# ONNX opset of the export; part of the cached file's name, so changing it exports again.
ONNX_OPSET = 17
# Largest batch one exported-model call runs (8 scans x 3 flips); bigger batches go in chunks.
MAX_EXPORTED_BATCH = 24
# Batch sizes an OpenVINO forward pass compiles a static model for (the rest run on the dynamic one).
MAX_STATIC_SHAPES = 8
# Python package that provides each exported backend.
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}


class Backend(str, Enum):
    """Values of ``FETALHC_BACKEND``."""

    AUTO = "auto"  # OpenVINO on CPU when installed, else ONNX Runtime when installed, else torch; torch on CUDA
    TORCH = "torch"
    OPENVINO = "openvino"  # CPU only
    ONNXRUNTIME = "onnxruntime"  # CPU only (the onnxruntime CPU wheel)


class Precision(str, Enum):
    """Values of ``FETALHC_PRECISION``: the network's arithmetic."""

    AUTO = "auto"  # bf16 for OpenVINO on a CPU with native bfloat16 (AMX / AVX512-BF16), else f32
    F32 = "f32"
    BF16 = "bf16"  # OpenVINO's CPU plugin in bfloat16; torch under bf16 autocast


def parse_precision(name: str | Precision) -> Precision:
    """The precision called ``name``; the error lists the valid choices."""
    try:
        return Precision(name)
    except ValueError:
        raise ValueError(f"unknown precision {name!r}; choose one of: auto, f32, bf16") from None


@cache
def cpu_has_native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 natively here (it lists BF16 among its capabilities)."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - no OpenVINO, or no CPU plugin: no bf16
        return False


def resolve_precision(precision: str | Precision, backend: Backend) -> Precision:
    """The concrete precision ``precision`` means for a resolved ``backend``.

    ``auto``: bf16 for OpenVINO on a CPU with native bfloat16 (the HC18 validation split measures within
    0.04 mm of the torch network's HC there), f32 otherwise (torch, ONNX Runtime, CPUs without bfloat16).
    """
    wanted = parse_precision(precision)
    if wanted is not Precision.AUTO:
        return wanted
    return Precision.BF16 if backend is Backend.OPENVINO and cpu_has_native_bf16() else Precision.F32


class BackendUnavailable(FetalHCError):
    """An inference backend was asked for that cannot run here (package missing, or not on this device)."""

    reason = "backend_unavailable"


@runtime_checkable
class ForwardPass(Protocol):
    """The network's forward pass: (N, 1, H, W) float32 in, (N, 1, H, W) logits out.

    ``stack_flips`` tells ``models.segmentation.segment`` to run all test-time flips as one batch of F x N.
    """

    backend: Backend
    stack_flips: bool

    def __call__(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor: ...


def parse_backend(name: str | Backend) -> Backend:
    """The backend called ``name``; the error lists the valid choices."""
    try:
        return Backend(name)
    except ValueError:
        valid = ", ".join(b.value for b in Backend)
        raise ValueError(f"unknown inference backend {name!r}; choose one of: {valid}") from None


@cache
def backend_available(backend: Backend) -> bool:
    """Whether ``backend``'s package imports in this environment (torch always does)."""
    if backend in (Backend.TORCH, Backend.AUTO):
        return True
    try:
        importlib.import_module(_PACKAGES[backend.value])
    except ImportError:
        return False
    return True


def resolve_backend(name: str | Backend, device: torch.device | str = "cpu") -> Backend:
    """The concrete backend ``name`` means on ``device``.

    ``auto``: torch on CUDA; on CPU OpenVINO when installed, else ONNX Runtime when installed, else torch.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        BackendUnavailable: an explicitly named backend whose package is missing, or a CPU-only one on CUDA.
    """
    backend = parse_backend(name)
    on_cuda = torch.device(device).type == "cuda"
    if backend is Backend.AUTO:
        if on_cuda:
            return Backend.TORCH
        for candidate in (Backend.OPENVINO, Backend.ONNXRUNTIME):
            if backend_available(candidate):
                return candidate
        return Backend.TORCH
    if backend is Backend.TORCH:
        return backend
    if on_cuda:
        raise BackendUnavailable(f"inference backend {backend.value!r} runs on CPU only; with FETALHC_DEVICE=cuda "
                                 "use FETALHC_BACKEND=torch or auto")
    if not backend_available(backend):
        raise BackendUnavailable(f"inference backend {backend.value!r} needs the {_PACKAGES[backend.value]!r} "
                                 f"package, which is not installed: pip install {_PACKAGES[backend.value]}, or "
                                 "use FETALHC_BACKEND=auto or torch")
    return backend


# -- export -----------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where exported models are cached: ``$XDG_CACHE_HOME/fetalhc/models`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fetalhc" / "models"


def export_onnx(net: nn.Module, input_size: tuple[int, int]) -> bytes:
    """The ONNX bytes of ``net`` at ``input_size`` (H, W), batch axis dynamic, input ``image``, output ``logits``.

    Uses the TorchScript exporter (``dynamo=False``), which needs the ``onnx`` package but not ``onnxscript``.
    """
    param = next(net.parameters(), None)
    if param is not None and param.device.type != "cpu":
        net = copy.deepcopy(net).cpu()
    was_training = net.training
    net.eval()
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy exporter warns that it is legacy, and that eval-mode InstanceNorm is exported with
            # input statistics: true of MONAI's InstanceNorm (no running statistics) in eval mode too.
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 1, *input_size),), buffer, input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)
    finally:
        net.train(was_training)
    return buffer.getvalue()


def exported_model_path(model: LoadedModel, cache_dir: str | Path | None = None) -> Path:
    """The cache file of ``model``'s export: named by its ``model_version`` (sha256) and the opset."""
    return _cache_path(model.model_version, cache_dir)


def _cache_path(key: str, cache_dir: str | Path | None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{key}.opset{ONNX_OPSET}.onnx"


def exported_onnx(model: LoadedModel, cache_dir: str | Path | None = None, refresh: bool = False) -> bytes:
    """``model``'s ONNX export, from the cache, or exported now and cached (unless ``refresh``: always exported).

    The file is written to a temporary name in the same folder and renamed into place, so processes
    exporting at once never see a partial file. A cache folder that cannot be written is logged and
    the export kept in memory only.
    """
    return exported_onnx_of(model.net, model.input_size, model.model_version, cache_dir, refresh)


def exported_onnx_of(net: nn.Module, input_size: tuple[int, int], key: str, cache_dir: str | Path | None = None,
                     refresh: bool = False) -> bytes:
    """``exported_onnx`` for any network taking (N, 1, H, W) images, cached under ``key`` (its file's sha256)."""
    path = _cache_path(key, cache_dir)
    if not refresh and path.is_file():
        return path.read_bytes()
    data = export_onnx(net, input_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("exported %s to %s", key[:12], path)
    except OSError as exc:
        log.warning("cannot cache the exported model in %s (%s); keeping it in memory", path.parent, exc)
    return data


# -- forward passes ---------------------------------------------------------------------------------


def _as_input(batch: np.ndarray | torch.Tensor, input_size: tuple[int, int]) -> np.ndarray:
    """A contiguous float32 (N, 1, H, W) array, checked against the exported model's input size."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != tuple(input_size):
        raise ValueError(f"expected a (N, 1, {input_size[0]}, {input_size[1]}) batch, got shape {x.shape}")
    return x


def _chunks(x: np.ndarray) -> list[np.ndarray]:
    """``x`` split along the batch axis into pieces of at most MAX_EXPORTED_BATCH."""
    return [x[i:i + MAX_EXPORTED_BATCH] for i in range(0, len(x), MAX_EXPORTED_BATCH)]


class TorchForward:
    """The torch network itself (eval mode, inference mode); flips run one batch each, as before backends."""

    backend = Backend.TORCH
    stack_flips = False

    def __init__(self, net: nn.Module, device: torch.device | str = "cpu", precision: Precision = Precision.F32) -> None:
        self.net = net
        self.device = torch.device(device)
        self.precision = precision

    def __call__(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logits of a (N, 1, H, W) batch, on the network's device (float32; bf16 autocast inside when asked)."""
        x = torch.as_tensor(batch, dtype=torch.float32).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision is Precision.BF16):
            return self.net(x).float()


class OnnxRuntimeForward:
    """The exported model in an ONNX Runtime CPU session."""

    backend = Backend.ONNXRUNTIME
    stack_flips = True

    def __init__(self, onnx_model: bytes, input_size: tuple[int, int], threads: int | None = None,
                 precision: Precision = Precision.F32) -> None:
        import onnxruntime as ort

        if precision is not Precision.F32:
            raise BackendUnavailable("ONNX Runtime's CPU provider runs this model in float32 only: use "
                                     "FETALHC_PRECISION=f32, or FETALHC_BACKEND=openvino for bf16")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        self.precision = precision
        self.session = ort.InferenceSession(onnx_model, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.input_size = input_size

    def __call__(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logits of a (N, 1, H, W) batch, as a CPU tensor."""
        x = _as_input(batch, self.input_size)
        out = [self.session.run(None, {self.input_name: chunk})[0] for chunk in _chunks(x)]
        return torch.from_numpy(np.concatenate(out) if len(out) > 1 else out[0])


class OpenVinoForward:
    """The exported model compiled by OpenVINO for the CPU, in float32 (default) or bfloat16.

    The precision is always set: OpenVINO's CPU plugin would otherwise pick bfloat16 by itself on CPUs that
    have it. bfloat16 (``resolve_precision``'s auto there) puts logits a few units off but the HC within
    0.04 mm of float32 on the HC18 validation split, about 1.6 x faster on AMX. Each batch size is compiled once with a static shape
    (faster than the dynamic model), up to MAX_STATIC_SHAPES sizes; others run on the dynamic model.
    """

    backend = Backend.OPENVINO
    stack_flips = True

    def __init__(self, onnx_model: bytes, input_size: tuple[int, int], threads: int | None = None,
                 precision: Precision = Precision.F32) -> None:
        import openvino as ov

        self._core = ov.Core()
        self.precision = precision
        self._config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": precision.value,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
        }
        self._model = self._core.read_model(onnx_model)
        self.compiled = self._core.compile_model(self._model, "CPU", self._config)
        self.input_size = input_size
        self._requests: dict[int | None, Any] = {None: self.compiled.create_infer_request()}
        self._lock = threading.Lock()  # one infer request per shape: callers from several threads take turns

    def _request_for(self, n: int) -> Any:
        """The infer request of a static model for batches of ``n`` (compiled on first use), or the dynamic one."""
        request = self._requests.get(n)
        if request is None:
            if len(self._requests) > MAX_STATIC_SHAPES:
                return self._requests[None]
            model = self._model.clone()
            model.reshape([n, 1, *self.input_size])
            request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            self._requests[n] = request
        return request

    def __call__(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logits of a (N, 1, H, W) batch, as a CPU tensor."""
        x = _as_input(batch, self.input_size)
        out = []
        with self._lock:
            for chunk in _chunks(x):
                request = self._request_for(len(chunk))
                request.infer({0: chunk})
                out.append(np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))
        return torch.from_numpy(np.concatenate(out) if len(out) > 1 else out[0])


_EXPORTED: dict[Backend, type[OnnxRuntimeForward | OpenVinoForward]] = {
    Backend.ONNXRUNTIME: OnnxRuntimeForward, Backend.OPENVINO: OpenVinoForward,
}


def make_forward(model: LoadedModel, backend: str | Backend = "auto", device: torch.device | str = "cpu",
                 cache_dir: str | Path | None = None, threads: int | None = None,
                 precision: str | Precision = Precision.AUTO) -> ForwardPass:
    """The forward pass of ``model`` through ``backend`` (resolved by ``resolve_backend``) on ``device``.

    Exported backends export the network on first use (cached in ``cache_dir``, see ``exported_onnx``)
    and use ``threads`` CPU threads (default: ``torch.get_num_threads()``, which the worker sets).
    A cached export that no longer loads is exported again once. ``precision``: auto (``resolve_precision``),
    f32, or bf16 (OpenVINO, or torch autocast; ONNX Runtime refuses it).
    """
    return forward_of(model.net, model.input_size, model.model_version, backend, device, cache_dir, threads,
                      precision)


def forward_of(net: nn.Module, input_size: tuple[int, int], key: str, backend: str | Backend = "auto",
               device: torch.device | str = "cpu", cache_dir: str | Path | None = None, threads: int | None = None,
               precision: str | Precision = Precision.AUTO) -> ForwardPass:
    """``make_forward`` for any network taking (N, 1, H, W) images at ``input_size``; ``key`` names its export."""
    chosen = resolve_backend(backend, device)
    wanted = resolve_precision(precision, chosen)
    if chosen is Backend.TORCH:
        return TorchForward(net, device, wanted)
    cls = _EXPORTED[chosen]
    was_cached = _cache_path(key, cache_dir).is_file()
    try:
        return cls(exported_onnx_of(net, input_size, key, cache_dir), input_size, threads, wanted)
    except BackendUnavailable:
        raise
    except Exception as exc:  # ONNX Runtime's load errors derive from Exception only
        if not was_cached:
            raise
        log.warning("cached export of %s does not load (%s); exporting again", key[:12], exc)
        return cls(exported_onnx_of(net, input_size, key, cache_dir, refresh=True), input_size, threads, wanted)


@lru_cache(maxsize=4)
def cached_forward(path: str | None, device: str, backend: str = "auto", cache_dir: str | None = None,
                   precision: str = "auto") -> ForwardPass:
    """One forward pass per (weights, device, backend, cache folder, precision) in this process (worker processes
    call this)."""
    return make_forward(cached_model(path, device), backend, device, cache_dir, precision=precision)
