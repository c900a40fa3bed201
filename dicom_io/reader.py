"""Reading an ultrasound DICOM file into ``Scan`` values: checks, grey conversion, calibration, crop."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_io.calibration import resolve_calibration
from dicom_io.errors import DicomError, UnsupportedImageError
from dicom_io.scan import Scan

log = logging.getLogger(__name__)

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
# Retired variants that old archives still hold.
US_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
US_MULTIFRAME_IMAGE_STORAGE_RETIRED = "1.2.840.10008.5.1.4.1.1.3"
ULTRASOUND_SOP_CLASSES = frozenset({
    US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE, US_IMAGE_STORAGE_RETIRED, US_MULTIFRAME_IMAGE_STORAGE_RETIRED,
})
# Protects worker memory from absurd headers: 4096 x 4096 pixels per frame, 2000 frames.
MAX_FRAME_PIXELS = 4096 * 4096
MAX_FRAMES = 2000


def read_dataset(path: str | Path, stop_before_pixels: bool = False) -> Dataset:
    """Parse a DICOM file, translating every parse failure into ``DicomError``."""
    path = Path(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise DicomError(f"{path.name} is not a DICOM file (no DICM preamble): {exc}", reason="not_dicom") from exc
    except FileNotFoundError as exc:
        raise DicomError(f"{path} does not exist", reason="missing_file") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
        raise DicomError(f"{path.name} cannot be parsed as DICOM ({type(exc).__name__}: {exc})",
                         reason="corrupt_dicom") from exc


def check_ultrasound(ds: Dataset) -> None:
    """Raise ``UnsupportedImageError`` unless ``ds`` is a B-mode ultrasound image with pixels."""
    sop_class = str(ds.get("SOPClassUID", ""))
    modality = str(ds.get("Modality", ""))
    if sop_class not in ULTRASOUND_SOP_CLASSES:
        name = getattr(ds.get("SOPClassUID"), "name", sop_class) or "unknown"
        raise UnsupportedImageError(
            f"not an ultrasound image: SOP Class {name} (modality {modality or 'unknown'}); "
            "fetalhc measures US Image Storage and US Multi-frame Image Storage only",
            reason="not_ultrasound",
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise UnsupportedImageError("the instance has no (7FE0,0010) Pixel Data", reason="no_pixel_data")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows <= 0 or cols <= 0 or rows * cols > MAX_FRAME_PIXELS or frames > MAX_FRAMES or frames < 1:
        raise UnsupportedImageError(
            f"absurd image dimensions {rows}x{cols}x{frames} frames (limit {MAX_FRAME_PIXELS} pixels a frame, "
            f"{MAX_FRAMES} frames)", reason="absurd_dimensions",
        )


def to_grey(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """One frame as grey pixels (rows, cols): colour converted to luminance, MONOCHROME1 inverted."""
    from pydicom.pixels import apply_color_lut, convert_color_space

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
        photometric = "RGB"
    if photometric.startswith("YBR") and frame.ndim == 3:
        # pydicom converts YBR_FULL(_422) to RGB when decoding JPEG; raw YBR needs the conversion.
        frame = convert_color_space(frame, photometric, "RGB") if photometric in ("YBR_FULL", "YBR_FULL_422") else frame
        photometric = "RGB"
    if frame.ndim == 3:
        rgb = frame[..., :3].astype(np.float32)
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma
        top = float(np.iinfo(frame.dtype).max) if np.issubdtype(frame.dtype, np.integer) else float(grey.max() or 1)
        return np.clip(grey / top * 255.0, 0, 255).astype(np.uint8)
    if frame.ndim != 2:
        raise UnsupportedImageError(f"unexpected pixel array shape {frame.shape}", reason="unsupported_pixels")
    if photometric == "MONOCHROME1":
        bits = int(ds.get("BitsStored", 8) or 8)
        top = (1 << bits) - 1 if np.issubdtype(frame.dtype, np.unsignedinteger) else int(frame.max())
        frame = top - frame.astype(np.int64)
    return frame


def frame_count(ds: Dataset) -> int:
    """(0028,0008) Number of Frames, 1 when absent."""
    return int(ds.get("NumberOfFrames", 1) or 1)


def read_frame(path: str | Path, ds: Dataset, index: int) -> np.ndarray:
    """Decode one frame (0-based) without decoding the whole cine."""
    from pydicom.pixels import pixel_array

    try:
        if frame_count(ds) == 1:
            return ds.pixel_array
        return pixel_array(str(path), index=index)
    except (ValueError, NotImplementedError, RuntimeError, EOFError, OSError, KeyError, TypeError, IndexError,
            AttributeError) as exc:
        syntax = getattr(ds.file_meta, "TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
        raise DicomError(f"pixel data cannot be decoded (transfer syntax {getattr(syntax, 'name', syntax)}): {exc}",
                         reason="undecodable_pixels") from exc


def parse_date(value: object) -> dt.date | None:
    """A DICOM DA value (YYYYMMDD) as a date, None when absent or malformed."""
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if text else None
    except ValueError:
        log.info("ignoring malformed DICOM date")
        return None


def representative_frame(ds: Dataset) -> int | None:
    """(0028,6010) Representative Frame Number (1-based), when present and valid."""
    value = ds.get("RepresentativeFrameNumber")
    try:
        number = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and 1 <= number <= frame_count(ds) else None


def frames_to_measure(ds: Dataset) -> list[int]:
    """1-based frames to measure: the representative frame when named, else all of them."""
    chosen = representative_frame(ds)
    return [chosen] if chosen else list(range(1, frame_count(ds) + 1))


def iter_scans(path: str | Path, frames: list[int] | None = None) -> Iterator[Scan]:
    """Yield one ``Scan`` per frame to measure (see ``frames_to_measure``), reading lazily.

    Raises:
        DicomError (or a subclass): the file cannot be read, is not ultrasound, or is uncalibrated.
    """
    path = Path(path)
    ds = read_dataset(path)
    check_ultrasound(ds)
    rows, cols = int(ds.Rows), int(ds.Columns)
    calibration = resolve_calibration(ds, rows, cols)
    total = frame_count(ds)
    for number in frames or frames_to_measure(ds):
        grey = to_grey(read_frame(path, ds, number - 1), ds)
        if grey.shape != (rows, cols):
            raise DicomError(f"decoded frame is {grey.shape}, header says {rows}x{cols}", reason="corrupt_dicom")
        origin = (0, 0)
        if calibration.region is not None:
            x0, y0, x1, y1 = calibration.region
            grey = grey[y0 : y1 + 1, x0 : x1 + 1]
            origin = (x0, y0)
        try:
            yield Scan(
                pixels=np.ascontiguousarray(grey),
                calibration=calibration,
                sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                sop_class_uid=str(ds.get("SOPClassUID", "")),
                series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
                study_instance_uid=str(ds.get("StudyInstanceUID", "")),
                accession_number=str(ds.get("AccessionNumber", "") or ""),
                patient_id=str(ds.get("PatientID", "") or ""),
                study_date=parse_date(ds.get("StudyDate")),
                last_menstrual_date=parse_date(ds.get("LastMenstrualDate")),
                frame=number,
                frames_in_instance=total,
                origin_xy=origin,
                manufacturer=str(ds.get("Manufacturer", "") or ""),
            )
        except ValueError as exc:
            raise UnsupportedImageError(f"cannot measure this image: {exc}", reason="unsupported_image") from exc


def read_scan(path: str | Path, frame: int | None = None) -> Scan:
    """The first frame to measure of ``path`` (or the 1-based ``frame`` asked for)."""
    return next(iter_scans(path, [frame] if frame else None))
