"""Resolving millimetres per pixel of one instance (DESIGN.md order: US regions, Pixel Spacing, none)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_io.errors import CalibrationError
from dicom_io.scan import Calibration, SpacingSource

log = logging.getLogger(__name__)

# (0018,6012) Region Spatial Format: 1 = 2D (tissue or flow).
SPATIAL_2D = 1
# (0018,6014) Region Data Type: 1 = tissue (B-mode).
DATA_TISSUE = 1
# (0018,6024)/(0018,6026) Physical Units X/Y Direction: 3 = cm.
UNITS_CM = 3
# Scanners commonly write Max X1 = Columns (one past the last pixel): tolerate that much.
BOUND_SLACK_PX = 1


@dataclass(frozen=True)
class RegionCandidate:
    """A usable 2-D tissue region of the Sequence of Ultrasound Regions, in mm/px."""

    index: int
    bounds: tuple[int, int, int, int]
    spacing_mm_x: float
    spacing_mm_y: float

    @property
    def area(self) -> int:
        """Pixels covered by the region."""
        x0, y0, x1, y1 = self.bounds
        return (x1 - x0 + 1) * (y1 - y0 + 1)


def usable_regions(ds: Dataset, rows: int, cols: int) -> list[RegionCandidate]:
    """2-D tissue regions in cm whose bounds lie inside the image; others are skipped and logged."""
    found = []
    for index, region in enumerate(ds.get("SequenceOfUltrasoundRegions", None) or []):
        spatial = region.get("RegionSpatialFormat")
        data_type = region.get("RegionDataType")
        units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
        if spatial != SPATIAL_2D or data_type != DATA_TISSUE:
            continue
        if units != (UNITS_CM, UNITS_CM):
            log.info("ultrasound region %d ignored: physical units %s are not cm", index, units)
            continue
        try:
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
            dx, dy = abs(float(region.PhysicalDeltaX)), abs(float(region.PhysicalDeltaY))
        except (AttributeError, TypeError, ValueError):
            log.info("ultrasound region %d ignored: bounds or physical deltas missing", index)
            continue
        if not (0 <= x0 < x1 and 0 <= y0 < y1) or x1 > cols - 1 + BOUND_SLACK_PX or y1 > rows - 1 + BOUND_SLACK_PX:
            log.info("ultrasound region %d ignored: bounds (%d,%d)-(%d,%d) exceed the %dx%d image",
                     index, x0, y0, x1, y1, cols, rows)
            continue
        if not (0 < dx < 1 and 0 < dy < 1):  # cm per pixel; 1 cm/px would be absurd
            log.info("ultrasound region %d ignored: implausible physical delta (%s, %s) cm", index, dx, dy)
            continue
        bounds = (x0, y0, min(x1, cols - 1), min(y1, rows - 1))
        found.append(RegionCandidate(index, bounds, dx * 10.0, dy * 10.0))
    return found


def resolve_calibration(ds: Dataset, rows: int, cols: int) -> Calibration:
    """Millimetres per pixel for this instance, and the region to crop to.

    Order (record which was used):
    1. (0018,6011) Sequence of Ultrasound Regions: the largest usable 2-D tissue region in cm,
       mm/px = |Physical Delta X/Y| (0018,602C/602E) x 10.
    2. (0028,0030) Pixel Spacing, [row spacing, column spacing] in mm.
    3. Otherwise ``CalibrationError``: HC in mm is never guessed.
    """
    regions = usable_regions(ds, rows, cols)
    if regions:
        best = max(regions, key=lambda r: r.area)
        return Calibration(best.spacing_mm_x, best.spacing_mm_y, SpacingSource.US_REGION, best.bounds)
    spacing = ds.get("PixelSpacing")
    if spacing is not None:
        try:
            row_mm, col_mm = float(spacing[0]), float(spacing[1])
            return Calibration(abs(col_mm), abs(row_mm), SpacingSource.PIXEL_SPACING)
        except (IndexError, TypeError, ValueError) as exc:
            raise CalibrationError(f"(0028,0030) Pixel Spacing {spacing!r} is not a valid pair of mm values: {exc}") from exc
    raise CalibrationError(
        "no calibration: the image has no usable 2-D tissue region in cm in (0018,6011) Sequence of "
        "Ultrasound Regions and no (0028,0030) Pixel Spacing, so HC cannot be given in mm"
    )
