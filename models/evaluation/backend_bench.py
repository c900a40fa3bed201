"""Benchmark of the bare forward pass (3 test-time flips) per inference backend: seconds per image, median of N.

A measurement for ``fetalhc bench``, never asserted in tests. Input is random noise at the model's
input size (the network's cost does not depend on the pixels); pre- and post-processing are excluded.

Example:
    >>> from models.segmentation.weights import load_weights
    >>> for row in bench_forward(load_weights(), batch_sizes=(1, 8), repeats=5):  # doctest: +SKIP
    ...     print(row.as_dict())
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.segmentation.backends import (
    Backend,
    BackendUnavailable,
    Precision,
    make_forward,
    parse_precision,
    resolve_backend,
    resolve_precision,
)
from models.segmentation.segment import TTA_FLIPS, predict_member_logits
from models.segmentation.weights import LoadedModel

DEFAULT_BACKENDS: tuple[str, ...] = ("torch", "openvino", "openvino:bf16", "onnxruntime")


def split_spec(spec: str) -> tuple[str, Precision]:
    """A backend entry ``name[:precision]`` (``openvino:bf16``, ``openvino:auto``) as its name and precision
    (f32 when not given: a bench names what it measures)."""
    name, _, precision = spec.partition(":")
    return name.strip(), parse_precision(precision.strip() or "f32")


@dataclass(frozen=True)
class ForwardTiming:
    """One backend at one batch size: median and best seconds per image over ``repeats`` timed runs.

    ``error`` says why a backend was not measured (not installed, not on this device); the times are then None.
    """

    backend: str
    batch_size: int
    flips: int
    threads: int
    repeats: int
    seconds_per_image: float | None
    best_seconds_per_image: float | None
    load_seconds: float | None  # building the forward pass: export (first time) or cache read, and compilation
    load_average: float | None  # 1-minute load average of the machine when the row was measured
    error: str | None = None
    amp: bool = False  # the network ran in bfloat16 (torch autocast, OpenVINO bf16): precision == "bf16"
    device: str = "cpu"
    precision: str = "f32"

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values."""
        return asdict(self)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def bench_forward(
    model: LoadedModel, backends: Sequence[str] = DEFAULT_BACKENDS, batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 10, warmup: int = 2, device: torch.device | str = "cpu", cache_dir: str | Path | None = None,
    threads: int | None = None, flips: Sequence[tuple[int, ...]] = TTA_FLIPS, seed: int = 0, amp: bool = False,
) -> list[ForwardTiming]:
    """Time ``predict_member_logits`` (the network with its flips) per backend and batch size.

    ``threads`` sets torch's CPU threads for the run (and the exported backends'); default: as they are.
    Each entry of ``backends`` is ``name[:precision]`` (``openvino:bf16``); ``amp`` runs every entry in bf16
    (torch under ``torch.autocast`` on ``device``, OpenVINO bf16; ONNX Runtime then gives an error row).
    A backend that cannot run here gives a row with its ``error`` instead of times.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be at least 1 and warmup at least 0, got {repeats} and {warmup}")
    if threads:
        torch.set_num_threads(threads)
    used_threads = torch.get_num_threads()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for spec in backends:
        started = time.perf_counter()
        try:
            name, precision = split_spec(spec)
            backend = resolve_backend(name, device)
            precision = Precision.BF16 if amp else resolve_precision(precision, backend)
            forward = make_forward(model, backend, device, cache_dir=cache_dir, threads=used_threads,
                                   precision=precision)
        except (BackendUnavailable, ValueError) as exc:
            rows += [ForwardTiming(spec, n, len(flips), used_threads, 0, None, None, None, _load_average(), str(exc),
                                   device=str(device)) for n in batch_sizes]
            continue
        load_s = time.perf_counter() - started
        label = backend.value if name == Backend.AUTO.value else name
        use_amp = precision is Precision.BF16
        for n in batch_sizes:
            batch = torch.randn(n, 1, *model.input_size, generator=generator).to(device)
            times = []
            for i in range(warmup + repeats):
                if torch.device(device).type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                predict_member_logits(forward, batch, flips).cpu()
                if i >= warmup:
                    times.append((time.perf_counter() - t0) / n)
            rows.append(ForwardTiming(label, n, len(flips), used_threads, repeats, round(statistics.median(times), 5),
                                      round(min(times), 5), round(load_s, 3), _load_average(), amp=use_amp,
                                      device=str(device), precision=precision.value))
    return rows
