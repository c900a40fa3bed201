"""The values read from an ultrasound DICOM: ``Calibration`` and ``Scan`` (validated on creation)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from enum import Enum

import numpy as np


class SpacingSource(str, Enum):
    """Where the millimetre scale came from (stored on every row)."""

    US_REGION = "us_region"  # (0018,6011) Sequence of Ultrasound Regions, Physical Delta X/Y
    PIXEL_SPACING = "pixel_spacing"  # (0028,0030) Pixel Spacing
    GIVEN = "given"  # supplied by the caller (e.g. an HC18 CSV), never from a DICOM


@dataclass(frozen=True)
class Calibration:
    """Millimetres per pixel along x (columns) and y (rows), where it came from, and the crop.

    ``region``: (x0, y0, x1, y1) inclusive pixel bounds of the chosen ultrasound region in the
    full frame, or None when the whole frame is used. ``notes``: what was ignored on the way
    (e.g. a region whose bounds exceed the image), for the row's detail.
    """

    spacing_mm_x: float
    spacing_mm_y: float
    source: SpacingSource
    region: tuple[int, int, int, int] | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("spacing_mm_x", "spacing_mm_y"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < 10):
                raise ValueError(f"{name} must be a finite spacing in (0, 10) mm/px, got {value!r}")
        if self.region is not None:
            x0, y0, x1, y1 = self.region
            if not (0 <= x0 <= x1 and 0 <= y0 <= y1):
                raise ValueError(f"region bounds {self.region} are not ordered (x0<=x1, y0<=y1)")


@dataclass(frozen=True)
class Scan:
    """One grey ultrasound frame ready to segment, with the identity of its instance.

    ``pixels``: 2-D uint8 array (rows, cols), already cropped to ``calibration.region`` when there is
    one; ``origin_xy``: where that crop starts in the full frame (pixels). ``frame``: 1-based
    frame number in the instance (1 for single-frame images).
    """

    pixels: np.ndarray
    calibration: Calibration
    sop_instance_uid: str
    sop_class_uid: str = ""
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    accession_number: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_birth_date: dt.date | None = None
    study_date: dt.date | None = None
    last_menstrual_date: dt.date | None = None
    frame: int = 1
    frames_in_instance: int = 1
    origin_xy: tuple[int, int] = (0, 0)
    manufacturer: str = ""
    text_cleaned: bool = False  # control characters were removed from a text element (dicom_io.text)

    def __post_init__(self) -> None:
        if not isinstance(self.pixels, np.ndarray) or self.pixels.ndim != 2:
            raise ValueError("Scan.pixels must be a 2-D grey array (rows, cols)")
        if min(self.pixels.shape) < 16:
            raise ValueError(f"image of {self.pixels.shape} pixels is too small to measure")
        if not self.sop_instance_uid:
            raise ValueError("Scan needs a SOP Instance UID")
        if self.frame < 1:
            raise ValueError("frame numbers start at 1")

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """(x, y) millimetres per pixel."""
        return self.calibration.spacing_mm_x, self.calibration.spacing_mm_y
