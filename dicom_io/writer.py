"""Writing grey images as US Image Storage files the way scanners do (region calibration in cm)."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from dicom_io.reader import US_IMAGE_STORAGE

# A fixed root for UIDs derived from names (pydicom's prefix + "fetalhc" digits): stable per input.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def stable_uid(*parts: str) -> str:
    """A valid UID derived deterministically from ``parts`` (same input, same UID)."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[digest])


@dataclass(frozen=True)
class ScanIdentity:
    """Patient, study and dating attributes to write into a generated file."""

    patient_id: str = "ANON"
    patient_name: str = "Anonymous^Fetus"
    study_date: dt.date | None = None
    last_menstrual_date: dt.date | None = None
    accession_number: str = ""
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None


def ultrasound_region(bounds: tuple[int, int, int, int], spacing_mm_x: float, spacing_mm_y: float) -> Dataset:
    """One (0018,6011) item: a 2-D tissue region in cm with the given pixel bounds (inclusive)."""
    x0, y0, x1, y1 = bounds
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0 = x0
    region.RegionLocationMinY0 = y0
    region.RegionLocationMaxX1 = x1
    region.RegionLocationMaxY1 = y1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = spacing_mm_x / 10.0
    region.PhysicalDeltaY = spacing_mm_y / 10.0
    region.ReferencePixelX0 = (x0 + x1) // 2
    region.ReferencePixelY0 = y0
    return region


def build_us_dataset(
    image: np.ndarray, spacing_mm_x: float, spacing_mm_y: float | None = None,
    identity: ScanIdentity | None = None, region_bounds: tuple[int, int, int, int] | None = None,
    pixel_spacing: bool = False, regions: bool = True,
) -> Dataset:
    """An uncompressed US Image Storage dataset (MONOCHROME2, 8-bit) holding ``image``.

    Args:
        image: grey uint8 pixels (rows, cols).
        spacing_mm_x, spacing_mm_y: millimetres per pixel (y defaults to x).
        region_bounds: (x0, y0, x1, y1) of the calibrated region; the whole image by default.
        pixel_spacing: also write (0028,0030) Pixel Spacing; ``regions=False`` omits (0018,6011).
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError("build_us_dataset expects a 2-D uint8 grey image")
    spacing_mm_y = spacing_mm_x if spacing_mm_y is None else spacing_mm_y
    ident = identity or ScanIdentity()
    rows, cols = image.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ident.sop_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = ident.study_uid or generate_uid()
    ds.SeriesInstanceUID = ident.series_uid or generate_uid()
    ds.Modality = "US"
    ds.Manufacturer = "fetalhc"
    ds.PatientID = ident.patient_id
    ds.PatientName = ident.patient_name
    ds.AccessionNumber = ident.accession_number
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if ident.study_date:
        ds.StudyDate = ident.study_date.strftime("%Y%m%d")
        ds.ContentDate = ds.StudyDate
    if ident.last_menstrual_date:
        ds.LastMenstrualDate = ident.last_menstrual_date.strftime("%Y%m%d")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(image).tobytes()
    if regions:
        bounds = region_bounds or (0, 0, cols - 1, rows - 1)
        ds.SequenceOfUltrasoundRegions = Sequence([ultrasound_region(bounds, spacing_mm_x, spacing_mm_y)])
    if pixel_spacing:
        ds.PixelSpacing = [spacing_mm_y, spacing_mm_x]
    return ds


def write_us_image(path: str | Path, image: np.ndarray, spacing_mm_x: float, spacing_mm_y: float | None = None,
                   identity: ScanIdentity | None = None, **kwargs: object) -> Path:
    """Write ``image`` as a US Image Storage file (see ``build_us_dataset``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = build_us_dataset(image, spacing_mm_x, spacing_mm_y, identity, **kwargs)  # type: ignore[arg-type]
    ds.save_as(path, enforce_file_format=True)
    return path
