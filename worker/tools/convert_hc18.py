"""``fetalhc convert-hc18``: HC18 PNGs with their CSV pixel size as US Image Storage files, as a scanner writes them.

Each image is placed, pixel for pixel, on a scanner-like frame with burned-in text and a depth ruler
around it; the fan-shaped (sector) B-mode image is described by one 2-D tissue region in cm, its
bounding rectangle, with the reference pixel at the sector's apex (physical 0 cm), the way curved-array
scanners write it. The reader crops to that region, so the network sees exactly the PNG's pixels and an
uncompressed file measures the same HC as the PNG with its CSV pixel size.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dicom_io.writer import Encoding, ScanIdentity, build_us_dataset, encode, stable_uid
from models.training.hc18 import Case, load_cases, subject_of

log = logging.getLogger(__name__)

# Margins of the scanner-like frame around the image (pixels); the top band holds the text.
DEFAULT_MARGIN_PX = 32
TEXT_GREY = 230
RULER_STEP_MM = 10.0


@dataclass(frozen=True)
class ConvertedScan:
    """One written file: the HC18 case it came from and where the image lies in the frame.

    ``region``: (x0, y0, x1, y1) inclusive bounds of the calibrated region (the PNG) in the frame.
    """

    name: str
    path: Path
    pixel_size_mm: float
    hc_mm: float | None
    region: tuple[int, int, int, int]


def _subject(case: Case) -> str:
    try:
        return subject_of(case.name)
    except ValueError:
        return case.image_path.stem


def scanner_frame(image: np.ndarray, pixel_size_mm: float, label: str,
                  margin_px: int = DEFAULT_MARGIN_PX) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``image`` copied unchanged onto a larger black frame with burned-in text and a depth ruler.

    Returns the frame and the image's inclusive bounds in it. ``margin_px=0``: the image alone.
    """
    rows, cols = image.shape
    if margin_px <= 0:
        return image.copy(), (0, 0, cols - 1, rows - 1)
    top = 2 * margin_px
    frame = Image.new("L", (cols + 2 * margin_px, rows + top + margin_px), 0)
    draw = ImageDraw.Draw(frame)
    draw.text((margin_px, margin_px // 2), f"fetalhc  HC18 {label}", fill=TEXT_GREY)
    draw.text((cols // 2 + margin_px, margin_px // 2), f"{pixel_size_mm:.4f} mm/px  OB  2D", fill=TEXT_GREY)
    x_ruler = cols + margin_px + 4  # depth ruler in the right margin, a tick every centimetre
    step = RULER_STEP_MM / pixel_size_mm
    depth = 0.0
    while depth <= rows - 1:
        y = top + round(depth)
        draw.line([(x_ruler, y), (x_ruler + margin_px // 3, y)], fill=TEXT_GREY)
        depth += step
    pixels = np.asarray(frame).copy()
    pixels[top : top + rows, margin_px : margin_px + cols] = image
    return pixels, (margin_px, top, margin_px + cols - 1, top + rows - 1)


def _lmp(case: Case, study_date: dt.date | None, lmp_days: int | None, lmp_from_hc: bool) -> dt.date | None:
    if study_date is None:
        return None
    if lmp_days is not None:
        return study_date - dt.timedelta(days=lmp_days)
    if lmp_from_hc and case.hc_mm is not None:
        from models.growth import ga_from_hc

        estimate = ga_from_hc(case.hc_mm, "hadlock_1984")
        return study_date - dt.timedelta(days=round(estimate.ga_days))
    return None


def convert_case(case: Case, out: Path, *, jpeg: bool = False, study_date: dt.date | None = None,
                 lmp_days: int | None = None, lmp_from_hc: bool = False,
                 margin_px: int = DEFAULT_MARGIN_PX) -> ConvertedScan:
    """Write one HC18 case as ``out/<stem>.dcm`` (see ``convert_hc18``)."""
    encoding = Encoding.JPEG_BASELINE if jpeg else Encoding.EXPLICIT_LE
    subject = _subject(case)
    image = case.load_image()
    frame, bounds = scanner_frame(image, case.pixel_size_mm, case.name, margin_px)
    ident = ScanIdentity(
        patient_id=f"HC18-{subject}", patient_name=f"HC18^{subject}", study_date=study_date,
        last_menstrual_date=_lmp(case, study_date, lmp_days, lmp_from_hc),
        # Stable UIDs from the file name; a lossy JPEG copy is a different instance (and series).
        sop_uid=stable_uid("hc18", encoding.value, case.name),
        series_uid=stable_uid("hc18-series", encoding.value, subject),
        study_uid=stable_uid("hc18-study", subject),
    )
    ds = build_us_dataset(frame, case.pixel_size_mm, identity=ident, region_bounds=bounds,
                          reference_pixel=((bounds[2] - bounds[0]) // 2, 0))
    ds.SequenceOfUltrasoundRegions[0].TransducerType = "CURVED LINEAR"  # (0018,6031): a sector image
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OBSTETRICAL", "0001"]  # value 4: 2D imaging
    ds.Manufacturer = "fetalhc (HC18 conversion)"
    ds.SeriesDescription = "HC18 fetal head, standard plane"
    ds.ImageComments = f"HC18 {case.name}; pixel size {case.pixel_size_mm} mm (CC BY 4.0, Zenodo 1322000)"
    ds.InstanceNumber = _instance_number(case.name)
    path = Path(out) / f"{case.image_path.stem}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    encode(ds, encoding).save_as(path, enforce_file_format=True)
    return ConvertedScan(case.name, path, case.pixel_size_mm, case.hc_mm, bounds)


def _instance_number(name: str) -> int:
    """``012_2HC.png`` -> 2, ``012_HC.png`` -> 1."""
    middle = name.split("_", 1)[1] if "_" in name else ""
    digits = middle.split("HC", 1)[0]
    return int(digits) if digits.isdigit() else 1


def convert_hc18(src: Path, out: Path, *, jpeg: bool = False, study_date: dt.date | None = None,
                 lmp_days: int | None = None, lmp_from_hc: bool = False, limit: int | None = None,
                 margin_px: int = DEFAULT_MARGIN_PX) -> list[ConvertedScan]:
    """Convert an HC18-layout folder (PNGs + pixel-size CSV) into US Image Storage files under ``out``.

    Args:
        src: the HC18 root (with ``training_set/``) or an image folder beside its CSV (e.g. ``test_set``).
        out: folder for ``<stem>.dcm`` files.
        jpeg: JPEG Baseline (Process 1), YBR_FULL_422 as scanners write it (lossy) instead of uncompressed.
        study_date: (0008,0020) Study Date; lmp_days: (0010,21D0) Last Menstrual Date that many days earlier;
            lmp_from_hc: LMP from the reference HC's Hadlock GA instead (labelled cases).
        limit: convert the first ``limit`` cases only (by file name).
        margin_px: frame margin around the image (0: the image alone, region = whole frame).
    Example:
        >>> convert_hc18(Path("../shared/hc18"), Path("var/hc18-dicom"), limit=3)  # doctest: +SKIP
    Raises:
        FileNotFoundError: no HC18 images or CSV under ``src``.
        ValueError: an LMP option without a study date, or both LMP options.
    """
    if (lmp_days is not None or lmp_from_hc) and study_date is None:
        raise ValueError("a Last Menstrual Date needs a study date: add --study-date YYYY-MM-DD")
    if lmp_days is not None and lmp_from_hc:
        raise ValueError("choose one of --lmp-days and --lmp-from-hc")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    cases = sorted(load_cases(Path(src), labelled_only=False), key=lambda c: c.name)[:limit]
    converted = [convert_case(c, Path(out), jpeg=jpeg, study_date=study_date, lmp_days=lmp_days,
                              lmp_from_hc=lmp_from_hc, margin_px=margin_px) for c in cases]
    log.info("converted %d HC18 images to %s", len(converted), out)
    return converted
