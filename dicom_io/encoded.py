"""JPEG frames left encoded, for the measuring side to decode a batch at once (nvJPEG on a GPU, libjpeg-turbo on
CPU threads) instead of pydicom decoding each frame to RGB and then to grey.

``open_encoded_scans`` is ``reader.open_scans`` for instances whose frames are plain 8-bit JPEG (Baseline or
Extended; grey, YCbCr or RGB): the same checks, frame plan, calibrations and identity, and each frame's own
header checked against the image header (``bounds.check_frame``), but each ``EncodedScan`` holds the frame's
codestream (``EncodedFrame``) instead of pixels; every other instance comes from ``open_scans`` itself.
``decode_frame`` decodes one on the CPU straight to grey (the luma, which ``reader.to_grey`` computes from
pydicom's RGB: the same within one grey level), and ``decoded`` swaps a scan's codestream for its pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydicom import uid as pdu

from dicom_io.bounds import check_frame, current_budget
from dicom_io.errors import DicomError, UnsupportedImageError
from dicom_io.frames import PARSE_ERRORS, FramePlan, number_attribute
from dicom_io.reader import Header, _frame_headers, _prepare, declared_geometry, open_prepared, planned
from dicom_io.scan import Calibration, Scan

# 8-bit JPEG that libjpeg-turbo and nvJPEG decode: Baseline (Process 1) and Extended (Process 2 & 4) at 8 bits.
JPEG_SYNTAXES = frozenset({str(pdu.JPEGBaseline8Bit), str(pdu.JPEGExtended12Bit)})
PHOTOMETRICS = frozenset({"MONOCHROME2", "MONOCHROME1", "YBR_FULL_422", "YBR_FULL", "RGB"})


@dataclass(frozen=True)
class EncodedFrame:
    """One frame's JPEG codestream, not yet decoded: the whole frame is ``rows`` x ``cols`` with ``samples``
    components; ``crop`` (x0, y0, x1, y1, inclusive) the region to measure (None: all of it); ``invert`` for
    MONOCHROME1 (grey = 255 - value)."""

    data: bytes
    rows: int
    cols: int
    samples: int = 1
    crop: tuple[int, int, int, int] | None = None
    invert: bool = False
    ndim = 2

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the region to measure."""
        if self.crop is None:
            return self.rows, self.cols
        x0, y0, x1, y1 = self.crop
        return y1 - y0 + 1, x1 - x0 + 1

    def finish(self, grey: Any) -> Any:
        """A decoded whole frame (a NumPy array or a tensor, 2-D) inverted if need be and cut to ``crop``."""
        if self.invert:
            grey = 255 - grey
        if self.crop is not None:
            x0, y0, x1, y1 = self.crop
            grey = grey[y0:y1 + 1, x0:x1 + 1]
        return grey


@dataclass(frozen=True)
class EncodedScan(Scan):
    """A ``Scan`` whose ``pixels`` are an ``EncodedFrame`` until decoded, then a 2-D array, or a tensor on the
    device that decoded it (``decoded``)."""

    def __post_init__(self) -> None:
        shape = getattr(self.pixels, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError("EncodedScan.pixels must be an EncodedFrame or a 2-D grey array")
        if min(int(s) for s in shape) < 16:
            raise ValueError(f"image of {tuple(shape)} pixels is too small to measure")
        if not self.sop_instance_uid:
            raise ValueError("Scan needs a SOP Instance UID")
        if self.frame < 1:
            raise ValueError("frame numbers start at 1")


def deferrable(header: Header) -> bool:
    """Whether ``header``'s frames are 8-bit JPEG that ``decode_frame`` (and nvJPEG) decode to grey exactly."""
    ds = header.dataset
    if str(header.transfer_syntax) not in JPEG_SYNTAXES or header.pixels is None or header.pixels.length is not None:
        return False
    try:
        photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
        samples = number_attribute(ds, "SamplesPerPixel", 1)
        bits, stored = number_attribute(ds, "BitsAllocated", 8), number_attribute(ds, "BitsStored", 8)
    except PARSE_ERRORS:
        return False
    return photometric in PHOTOMETRICS and bits == 8 and stored == 8 and samples == (1 if photometric.startswith(
        "MONOCHROME") else 3)


def open_encoded_scans(path: str | Path, max_frames: int = 0, max_scan_bytes: int | None = None,
                       ) -> tuple[FramePlan, Iterator[Scan]]:
    """``open_scans(path, max_frames=...)``, with the frames of a plain 8-bit JPEG instance left encoded
    (``EncodedScan``); any other instance's scans are decoded as ``open_scans`` decodes them.

    Raises:
        DicomError (or a subclass): as ``open_scans``; a frame whose own header disagrees with the image header
            (``pixel_header_mismatch``) or has none (``undecodable_pixels``) from the iterator.
    """
    path = Path(path)
    budget = current_budget() if max_scan_bytes is None else max_scan_bytes
    prepared = _prepare(path, budget)
    header, calibrations, rows, cols, _ = prepared
    if not deferrable(header):
        return open_prepared(path, prepared, budget, max_frames=max_frames)
    ds = header.dataset
    plan, identity = planned(path, ds, max_frames)
    invert = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    samples = number_attribute(ds, "SamplesPerPixel", 1)
    return plan, _encoded_scans(path, header, calibrations, plan, identity, (rows, cols, samples), invert)


def _encoded_scans(path: Path, header: Header, calibrations: list[Calibration], plan: FramePlan,
                   identity: dict[str, object], shape: tuple[int, int, int], invert: bool) -> Iterator[Scan]:
    rows, cols, samples = shape
    declared = declared_geometry(header.dataset)
    wanted = {n - 1 for n in plan.frames}
    last = max(wanted)
    frames = _frame_headers(path, header, "jpeg")
    for index in range(last + 1):
        try:
            data = next(frames)
        except StopIteration:
            raise DicomError(f"{path.name}: frame {index + 1} is missing from the pixel data",
                             reason="corrupt_dicom") from None
        except PARSE_ERRORS as exc:
            raise DicomError(f"{path.name}: pixel data cannot be read ({type(exc).__name__}: {exc})",
                             reason="undecodable_pixels") from exc
        if index not in wanted:
            continue
        check_frame(data, "jpeg", declared, index + 1)
        for calibration in calibrations:
            frame = EncodedFrame(bytes(data), rows, cols, samples, calibration.region, invert)
            origin = (calibration.region[0], calibration.region[1]) if calibration.region is not None else (0, 0)
            try:
                yield EncodedScan(pixels=frame, calibration=calibration, frame=index + 1,  # type: ignore[arg-type]
                                  frames_in_instance=plan.total, origin_xy=origin, **identity)  # type: ignore[arg-type]
            except ValueError as exc:
                raise UnsupportedImageError(f"cannot measure this image: {exc}", reason="unsupported_image") from exc


def decode_frame(frame: EncodedFrame, name: str = "frame") -> np.ndarray:
    """One frame decoded on the CPU (OpenCV's libjpeg-turbo) straight to grey uint8, inverted and cut as asked.

    Raises:
        DicomError: ``undecodable_pixels`` (not a JPEG libjpeg-turbo decodes), ``corrupt_dicom`` (another size
            than the header's).
    """
    grey = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    if grey is None:
        raise DicomError(f"{name}: the JPEG frame cannot be decoded", reason="undecodable_pixels")
    if grey.shape != (frame.rows, frame.cols):
        raise DicomError(f"{name}: decoded frame is {grey.shape}, header says {frame.rows}x{frame.cols}",
                         reason="corrupt_dicom")
    return np.ascontiguousarray(frame.finish(grey))


def decoded(scan: Scan, pixels: Any | None = None) -> Scan:
    """``scan`` with its codestream replaced by ``pixels`` (decoded elsewhere, e.g. on a GPU), or decoded here;
    a scan that holds pixels already comes back as it is."""
    frame = scan.pixels if isinstance(scan.pixels, EncodedFrame) else None
    if frame is None:
        return scan
    return dataclasses.replace(scan, pixels=decode_frame(frame, f"frame {scan.frame}") if pixels is None else pixels)


def host_pixels(scan: Scan) -> np.ndarray:
    """``scan``'s grey pixels as a NumPy array on the host (decoded, or copied from a device, as need be)."""
    pixels: Any = scan.pixels
    if isinstance(pixels, EncodedFrame):
        return decode_frame(pixels, f"frame {scan.frame}")
    if isinstance(pixels, np.ndarray):
        return pixels
    return np.asarray(pixels.cpu().numpy())
