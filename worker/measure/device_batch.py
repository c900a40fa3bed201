"""A batch measured where the network runs (issue 23): JPEG frames decoded there (nvJPEG through torchvision on a
GPU; libjpeg-turbo on CPU threads otherwise), then ``models.plane.device.measure_on_device``: resize, normalise,
the forward pass with its flips, outlines, fits, quality, the gate and SonoNet-16, with one small copy back.

On CUDA the pipeline uses it always (``uses_device_path``). On CPU the NumPy path is kept: measured on 2 cores
(README, "GPU node"), the batched torch outlines and features are no faster there than OpenCV and NumPy, and the
exported CPU backends take NumPy input anyway. Frames that are not plain JPEG (uncompressed, JPEG-LS, JPEG 2000,
RLE, video) are decoded on the host by ``dicom_io`` and copied to the device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np
import torch

from dicom_io import DicomError, Scan
from dicom_io.encoded import EncodedFrame, EncodedScan, decode_frame, decoded
from models.geometry.biometry import Biometry
from models.plane.device import measure_on_device
from models.plane.gating import PlaneJudgement

log = logging.getLogger(__name__)

# Threads that decode JPEG frames on the host (libjpeg-turbo works outside Python's lock).
_DECODERS = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 1))), thread_name_prefix="fetalhc-decode")


def uses_device_path(ctx: Any) -> bool:
    """Whether the pipeline measures the batches of ``ctx`` (a ``pipeline.PipelineContext``) on the device
    (``measure_batch``): on CUDA."""
    return ctx.device.type == "cuda"


@cache
def _gpu_decoder() -> Any:
    """torchvision's ``decode_jpeg`` (nvJPEG on CUDA) and its grey mode, or None where torchvision is missing."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - torchvision is optional (the GPU image has it)
        log.info("torchvision is not installed: JPEG frames are decoded on CPU threads")
        return None
    return decode_jpeg, ImageReadMode.GRAY


def decode_on_host(scans: Sequence[Scan]) -> list[Scan | Exception]:
    """Each scan with its JPEG codestream decoded on CPU threads (``dicom_io.encoded.decode_frame``), or the error."""
    def one(scan: Scan) -> Scan | Exception:
        try:
            return decoded(scan)
        except DicomError as exc:
            return exc

    if sum(isinstance(s.pixels, EncodedFrame) for s in scans) < 2:
        return [one(s) for s in scans]
    return list(_DECODERS.map(one, scans))


def _gpu_decode(frames: list[EncodedFrame], device: torch.device) -> list[torch.Tensor | Exception]:
    """The frames decoded by nvJPEG in one call (each alone where the batch fails, then on the CPU)."""
    decoder = _gpu_decoder()
    assert decoder is not None
    decode_jpeg, grey = decoder
    data = [torch.frombuffer(bytearray(f.data), dtype=torch.uint8) for f in frames]
    try:
        images = decode_jpeg(data, mode=grey, device=device)
    except RuntimeError:
        images = []
        for f, d in zip(frames, data):
            try:
                images.append(decode_jpeg(d, mode=grey, device=device))
            except RuntimeError:  # nvJPEG refused it: libjpeg-turbo decides
                try:
                    images.append(torch.from_numpy(decode_frame(f)).to(device)[None])
                except DicomError as exc:
                    images.append(exc)
    out: list[torch.Tensor | Exception] = []
    for f, image in zip(frames, images):
        if isinstance(image, Exception):
            out.append(image)
        elif tuple(image.shape[-2:]) != (f.rows, f.cols):
            out.append(DicomError(f"decoded frame is {tuple(image.shape[-2:])}, header says {f.rows}x{f.cols}",
                                  reason="corrupt_dicom"))
        else:
            out.append(f.finish(image[0]))
    return out


def to_device(scans: Sequence[Scan], device: torch.device) -> list[Scan | Exception]:
    """Each scan with its pixels as a 2-D uint8 tensor on ``device`` (JPEG decoded there on a GPU with
    torchvision, else on CPU threads), or the decoding error."""
    out: list[Scan | Exception] = list(scans)
    encoded = [i for i, s in enumerate(scans) if isinstance(s.pixels, EncodedFrame)]
    if encoded and device.type == "cuda" and _gpu_decoder() is not None:
        frames = [scans[i].pixels for i in encoded]
        for i, image in zip(encoded, _gpu_decode(frames, device)):  # type: ignore[arg-type]
            out[i] = image if isinstance(image, Exception) else decoded(scans[i], image)
    elif encoded:
        out = decode_on_host(scans)
    if device.type != "cpu":  # on a CPU run the NumPy pixels serve as they are (frame_tensor)
        for i, scan in enumerate(out):
            if isinstance(scan, Scan) and isinstance(scan.pixels, np.ndarray):
                pixels = scan.pixels if scan.pixels.flags.writeable else scan.pixels.copy()
                out[i] = _with_pixels(scan, torch.from_numpy(pixels).to(device, non_blocking=True))
    return out


def _with_pixels(scan: Scan, pixels: Any) -> Scan:
    fields = {f: getattr(scan, f) for f in scan.__dataclass_fields__}
    fields["pixels"] = pixels
    return EncodedScan(**fields)


def frame_tensor(scan: Scan) -> torch.Tensor:
    """The scan's pixels as a tensor (they are one on the device already, or a NumPy array on a CPU run)."""
    pixels = scan.pixels
    return pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.asarray(pixels))


def measure_batch(ctx: Any, scans: Sequence[Scan],
                  ) -> tuple[list[Scan], list[Biometry | Exception], list[PlaneJudgement | None]]:
    """The scans decoded and measured on ``ctx.device`` (``ctx``: a ``pipeline.PipelineContext``): the scans as measured (their pixels on the device), each
    one's Biometry or error (``NotHeadPlane`` for one refused) and its plane judgement."""
    ready = to_device(scans, ctx.device)
    good = [i for i, s in enumerate(ready) if isinstance(s, Scan)]
    results: list[Biometry | Exception] = [s if isinstance(s, Exception) else None for s in ready]  # type: ignore[misc]
    judgements: list[PlaneJudgement | None] = [None] * len(scans)
    measured_scans = [s if isinstance(s, Scan) else scans[i] for i, s in enumerate(ready)]
    if good:
        frames = [frame_tensor(measured_scans[i]) for i in good]
        spacings = [measured_scans[i].spacing_mm for i in good]
        out, judged = measure_on_device(ctx.net, frames, spacings, ctx.model.input_size, ctx.gate, ctx.classifier)
        for i, result, judgement in zip(good, out, judged):
            results[i], judgements[i] = result, judgement
    return measured_scans, results, judgements
