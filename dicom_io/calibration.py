"""Resolving millimetres per pixel of one instance (DESIGN.md order: US regions, Pixel Spacing, none)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from dicom_io.errors import CalibrationError, UnsupportedImageError
from dicom_io.scan import Calibration, SpacingSource

log = logging.getLogger(__name__)

# (0018,6012) Region Spatial Format: 1 = 2D (tissue or flow), 2 = M-mode, 3 = spectral (CW/PW Doppler),
# 4 = waveform (physiological and Doppler traces), 5 = graphics.
SPATIAL_2D = 1
SPATIAL_M_MODE = 2
SPATIAL_SPECTRAL = 3
# (0018,6014) Region Data Type: 1 = tissue (B-mode); 2 = colour flow, 3 = PW spectral Doppler,
# 4 = CW spectral Doppler, 5..8 = Doppler/volume traces.
DATA_TISSUE = 1
DOPPLER_DATA_TYPES = frozenset({2, 3, 4, 5, 6, 7, 8})
# (0018,6024)/(0018,6026) Physical Units X/Y Direction: 3 = cm.
UNITS_CM = 3
# Scanners commonly write Max X1 = Columns (one past the last pixel): tolerate that much.
BOUND_SLACK_PX = 1
# A region narrower than this cannot hold a head worth measuring.
MIN_REGION_PX = 16


@dataclass(frozen=True)
class RegionCandidate:
    """A usable 2-D tissue region of the Sequence of Ultrasound Regions, in mm/px.

    ``bounds``: (x0, y0, x1, y1) inclusive pixel bounds, clipped to the image.
    """

    index: int
    bounds: tuple[int, int, int, int]
    spacing_mm_x: float
    spacing_mm_y: float

    @property
    def area(self) -> int:
        """Pixels covered by the region."""
        x0, y0, x1, y1 = self.bounds
        return (x1 - x0 + 1) * (y1 - y0 + 1)


@dataclass
class RegionSurvey:
    """What (0018,6011) Sequence of Ultrasound Regions holds: usable regions, why others were skipped.

    ``usable`` is ordered largest first. ``doppler_or_m_mode`` counts regions that show M-mode or
    Doppler data (spectra, traces, colour flow), ``tissue`` the 2-D tissue regions seen (usable or not).
    """

    usable: list[RegionCandidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    total: int = 0
    tissue: int = 0
    doppler_or_m_mode: int = 0

    @property
    def doppler_only(self) -> bool:
        """Regions exist, some show M-mode/Doppler, and none is a 2-D tissue (B-mode) region."""
        return self.total > 0 and self.tissue == 0 and self.doppler_or_m_mode > 0


def _int(value: object) -> int:
    number = int(value)  # type: ignore[call-overload]
    if number < 0:
        raise ValueError("negative pixel bound")
    return number


def survey_regions(ds: Dataset, rows: int, cols: int) -> RegionSurvey:
    """Classify each (0018,6011) region; keep 2-D tissue regions in cm whose bounds lie in the image.

    Physical Delta X/Y (0018,602C/602E) may be negative (the axis runs the other way): the magnitude
    is used. A region whose bounds exceed the image is ignored and a note says so.
    """
    survey = RegionSurvey()
    try:
        items = list(ds.get("SequenceOfUltrasoundRegions", None) or [])
    except (TypeError, ValueError, AttributeError) as exc:
        survey.notes.append(f"(0018,6011) Sequence of Ultrasound Regions is unreadable ({exc}); ignored")
        return survey
    seen: set[tuple[tuple[int, int, int, int], float, float]] = set()
    for index, region in enumerate(items):
        survey.total += 1
        try:
            spatial = region.get("RegionSpatialFormat")
            data_type = region.get("RegionDataType")
            units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
        except (TypeError, ValueError, AttributeError):
            survey.notes.append(f"ultrasound region {index} ignored: unreadable attributes")
            continue
        if spatial in (SPATIAL_M_MODE, SPATIAL_SPECTRAL) or data_type in DOPPLER_DATA_TYPES:
            survey.doppler_or_m_mode += 1
        if spatial != SPATIAL_2D or data_type != DATA_TISSUE:
            continue
        survey.tissue += 1
        if units != (UNITS_CM, UNITS_CM):
            survey.notes.append(f"ultrasound region {index} ignored: physical units {units} are not cm (3)")
            continue
        try:
            x0, y0 = _int(region.RegionLocationMinX0), _int(region.RegionLocationMinY0)
            x1, y1 = _int(region.RegionLocationMaxX1), _int(region.RegionLocationMaxY1)
            dx, dy = abs(float(region.PhysicalDeltaX)), abs(float(region.PhysicalDeltaY))
        except (AttributeError, TypeError, ValueError, OverflowError):
            survey.notes.append(f"ultrasound region {index} ignored: bounds or physical deltas missing or invalid")
            continue
        if not (x0 < x1 and y0 < y1):
            survey.notes.append(f"ultrasound region {index} ignored: bounds ({x0},{y0})-({x1},{y1}) are empty")
            continue
        if x1 > cols - 1 + BOUND_SLACK_PX or y1 > rows - 1 + BOUND_SLACK_PX:
            survey.notes.append(f"ultrasound region {index} ignored: bounds ({x0},{y0})-({x1},{y1}) exceed "
                                f"the {cols}x{rows} image")
            continue
        if not (math.isfinite(dx) and math.isfinite(dy) and 0 < dx < 1 and 0 < dy < 1):
            # cm per pixel: 1 cm/px (or 0) is not a scanner's scale.
            survey.notes.append(f"ultrasound region {index} ignored: implausible physical delta ({dx}, {dy}) cm/px")
            continue
        bounds = (x0, y0, min(x1, cols - 1), min(y1, rows - 1))
        if min(bounds[2] - x0, bounds[3] - y0) + 1 < MIN_REGION_PX:
            survey.notes.append(f"ultrasound region {index} ignored: {bounds} is too small to hold a head")
            continue
        key = (bounds, dx, dy)
        if key in seen:  # the same region written twice
            continue
        seen.add(key)
        survey.usable.append(RegionCandidate(index, bounds, dx * 10.0, dy * 10.0))
    survey.usable.sort(key=lambda r: (-r.area, r.index))
    for note in survey.notes:
        log.info("%s", note)
    return survey


def usable_regions(ds: Dataset, rows: int, cols: int) -> list[RegionCandidate]:
    """2-D tissue regions in cm whose bounds lie inside the image, largest first."""
    return survey_regions(ds, rows, cols).usable


def resolve_calibrations(ds: Dataset, rows: int, cols: int) -> list[Calibration]:
    """Every trustworthy calibration of this instance, one per region to measure (largest first).

    Order (the source is recorded on each):
    1. (0018,6011) Sequence of Ultrasound Regions: every usable 2-D tissue region in cm, mm/px =
       |Physical Delta X/Y| (0018,602C/602E) x 10, each with its crop. The head is in one of them:
       the caller measures each and keeps the best (side-by-side dual views have two).
    2. (0028,0030) Pixel Spacing, [row spacing, column spacing] in mm, the whole frame.
    3. Otherwise ``CalibrationError``: HC in mm is never guessed.

    Raises:
        UnsupportedImageError: reason ``doppler_only``: the regions show only M-mode or Doppler data.
        CalibrationError: reason ``uncalibrated``.
    """
    survey = survey_regions(ds, rows, cols)
    notes = tuple(survey.notes)
    if survey.usable:
        return [Calibration(r.spacing_mm_x, r.spacing_mm_y, SpacingSource.US_REGION, r.bounds, notes)
                for r in survey.usable]
    if survey.doppler_only:
        raise UnsupportedImageError(
            f"the image holds only M-mode or Doppler data ({survey.doppler_or_m_mode} such region(s) in "
            "(0018,6011) Sequence of Ultrasound Regions, no 2-D tissue region): there is no B-mode head to measure",
            reason="doppler_only",
        )
    spacing = ds.get("PixelSpacing")
    if spacing is not None:
        try:
            row_mm, col_mm = float(spacing[0]), float(spacing[1])
            return [Calibration(abs(col_mm), abs(row_mm), SpacingSource.PIXEL_SPACING, None, notes)]
        except (IndexError, TypeError, ValueError) as exc:
            raise CalibrationError(
                f"(0028,0030) Pixel Spacing {spacing!r} is not a valid pair of mm values ({exc}); "
                "fix the header or add a calibrated (0018,6011) ultrasound region") from exc
    why = ("; ".join(notes) + "; ") if notes else ""
    raise CalibrationError(
        f"no calibration: {why}the image has no usable 2-D tissue region in cm in (0018,6011) Sequence of "
        "Ultrasound Regions and no (0028,0030) Pixel Spacing, so HC cannot be given in mm"
    )


def resolve_calibration(ds: Dataset, rows: int, cols: int) -> Calibration:
    """The first calibration of ``resolve_calibrations`` (the largest usable region, or Pixel Spacing)."""
    return resolve_calibrations(ds, rows, cols)[0]
