"""DICOM Comprehensive SR of one head measurement: HC, BPD, OFD, GA from HC, quality, algorithm, ellipse.

The content tree is modelled on PS3.16 TID 5000 *OB-GYN Ultrasound Procedure Report* (its Fetal
Biometry section, TID 5005/5008: LOINC-coded NUMs in mm) without claiming conformance to it (no
Template Identifier is written): a fetalhc report holds one automated measurement, not a procedure.

    CONTAINER (125000, DCM, "OB-GYN Ultrasound Procedure Report")
      HAS CONCEPT MOD  language (TID 1204); HAS OBS CONTEXT  device observer fetalhc (TID 1004)
      CONTAINS CONTAINER (125002, DCM, "Fetal Biometry")
        CONTAINS CONTAINER (125005, DCM, "Biometry Group")
          CONTAINS NUM (11984-2, LN, "Head Circumference") mm
            HAS CONCEPT MOD  Algorithm Name / Version (TID 4019; version = sha256 of the weights)
            INFERRED FROM SCOORD ELLIPSE (111030, DCM, "Image Region")   (when the pixel geometry is exact)
              SELECTED FROM IMAGE  the source instance (and frame)
          CONTAINS NUM (11820-8, LN, "Biparietal Diameter") mm, NUM (11851-3, LN, "Occipital-Frontal Diameter") mm
          CONTAINS NUM (18185-9, LN, "Gestational Age") d, HAS CONCEPT MOD (121420, DCM, "Equation")
          CONTAINS NUM quality, CODE status, CODE review flags (private scheme 99FETALHC), TEXT comment

UIDs are derived from (source SOP Instance UID, frame, model version), so measuring the same frame
again with the same model gives the same SR instance (a PACS replaces or ignores it, never duplicates).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_io.errors import SrError

PRIVATE_SCHEME = "99FETALHC"
PRIVATE_SCHEME_NAME = "fetalhc local codes"
MANUFACTURER = "fetalhc"
SERIES_NUMBER = 9301
SERIES_DESCRIPTION = "fetalhc automated head biometry"
SR_FILE_MODE = 0o600  # SR files name their patient: readable by the owner only

MM = hd.sr.CodedConcept("mm", "UCUM", "mm")
DAYS = hd.sr.CodedConcept("d", "UCUM", "days")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
HEAD_CIRCUMFERENCE = hd.sr.CodedConcept("11984-2", "LN", "Head Circumference")
BIPARIETAL_DIAMETER = hd.sr.CodedConcept("11820-8", "LN", "Biparietal Diameter")
OCCIPITAL_FRONTAL_DIAMETER = hd.sr.CodedConcept("11851-3", "LN", "Occipital-Frontal Diameter")
GESTATIONAL_AGE = hd.sr.CodedConcept("18185-9", "LN", "Gestational Age")
QUALITY = hd.sr.CodedConcept("QUALITY", PRIVATE_SCHEME, "Measurement quality score")
STATUS = hd.sr.CodedConcept("STATUS", PRIVATE_SCHEME, "Measurement status")
REVIEW_FLAG = hd.sr.CodedConcept("FLAG", PRIVATE_SCHEME, "Review flag")
STATUS_VALUES = {
    "measured": hd.sr.CodedConcept("MEASURED", PRIVATE_SCHEME, "Measured"),
    "needs_review": hd.sr.CodedConcept("NEEDS_REVIEW", PRIVATE_SCHEME, "Needs review"),
}
# The row statuses a report is written for: those it can code (db.tables.REPORTABLE_STATUSES is the same set;
# dicom_io does not import the database, tests/dicom_io/test_sr.py checks that they agree).
REPORTABLE = tuple(STATUS_VALUES)
FLAG_CODES = {
    "low_confidence": ("LOW_CONFIDENCE", "Low segmentation confidence"),
    "irregular_boundary": ("IRREG_BOUNDARY", "Irregular skull boundary"),
    "cut_by_border": ("CUT_BY_BORDER", "Head cut by the image border"),
    "implausible_hc": ("IMPLAUSIBLE_HC", "HC outside the plausible range"),
    "unstable": ("UNSTABLE", "HC unstable across test-time flips"),
}
# (121420, DCM, "Equation") values: CID 12013 where LOINC has a code, else a local one.
GA_EQUATIONS = {
    "hadlock_1984": hd.sr.CodedConcept("11932-1", "LN", "HC, Hadlock 1984"),
    "intergrowth_2016": hd.sr.CodedConcept("IG21_HC_2016", PRIVATE_SCHEME, "HC, INTERGROWTH-21st 2016"),
}
# Where the row's millimetre frame starts in the full image, by calibration source (dicom_io.scan.SpacingSource).
_FRAME_SOURCES = ("us_region", "pixel_spacing")


@dataclass(frozen=True)
class HeadMeasurement:
    """What an SR reports about one measured frame (a measurement row of status measured | needs_review).

    ``ellipse_mm``: (cx, cy, a, b, angle) of the outer skull ellipse in millimetres from the top-left
    pixel centre of the region the network saw (x right, y down; ``a`` the semi-major axis, ``angle``
    radians from +x to it). ``region_origin_px``: (x0, y0) of that region in the full frame, None
    for the whole frame. ``spacing_mm``: (x, y) millimetres per pixel. ``ga_estimate_days``: GA
    estimated from HC by ``ga_formula``.
    """

    sop_instance_uid: str
    hc_mm: float
    bpd_mm: float
    ofd_mm: float
    status: str
    model_name: str
    model_version: str
    frame: int = 1
    quality: float | None = None
    flags: tuple[str, ...] = ()
    ga_estimate_days: float | None = None
    ga_formula: str | None = None
    ellipse_mm: tuple[float, float, float, float, float] | None = None
    spacing_mm: tuple[float, float] | None = None
    spacing_source: str | None = None
    region_origin_px: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.sop_instance_uid:
            raise SrError("the measurement has no SOP Instance UID to reference")
        if self.status not in REPORTABLE:
            raise SrError(f"status {self.status!r} has no report; only {', '.join(REPORTABLE)} do")
        for name in ("hc_mm", "bpd_mm", "ofd_mm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SrError(f"{name} must be a positive number of millimetres, got {value!r}")
        if not self.model_version:
            raise SrError("the measurement has no model version (sha256 of the weights)")
        if self.frame < 1:
            raise SrError("frame numbers start at 1")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HeadMeasurement:
        """From a measurement row (``db.Measurement`` columns as a mapping, e.g. the pipeline's row dict)."""
        ellipse_keys = ("center_x_mm", "center_y_mm", "semi_axis_a_mm", "semi_axis_b_mm", "angle_rad")
        ellipse = tuple(row.get(k) for k in ellipse_keys)
        spacing = (row.get("spacing_mm_x"), row.get("spacing_mm_y"))
        origin = (row.get("region_x0"), row.get("region_y0"))
        return cls(
            sop_instance_uid=str(row.get("sop_instance_uid") or ""),
            frame=int(row.get("frame") or 1),
            hc_mm=row.get("hc_mm"),  # type: ignore[arg-type]  (validated in __post_init__)
            bpd_mm=row.get("bpd_mm"),  # type: ignore[arg-type]
            ofd_mm=row.get("ofd_mm"),  # type: ignore[arg-type]
            status=str(row.get("status") or ""),
            model_name=str(row.get("model_name") or "fetalhc"),
            model_version=str(row.get("model_version") or ""),
            quality=row.get("quality"),
            flags=tuple(f for f in str(row.get("flags") or "").split(",") if f),
            ga_estimate_days=row.get("ga_estimate_days"),
            ga_formula=row.get("ga_formula"),
            ellipse_mm=ellipse if all(v is not None for v in ellipse) else None,  # type: ignore[arg-type]
            spacing_mm=spacing if all(v is not None for v in spacing) else None,  # type: ignore[arg-type]
            spacing_source=row.get("spacing_source"),
            region_origin_px=origin if all(v is not None for v in origin) else None,  # type: ignore[arg-type]
        )


def sr_uids(study_instance_uid: str, sop_instance_uid: str, frame: int, model_version: str) -> tuple[str, str]:
    """(Series, SOP Instance) UIDs of the SR: one fetalhc series per study and model, one SR per frame."""
    series = generate_uid(entropy_srcs=["fetalhc-sr-series", study_instance_uid, model_version])
    instance = generate_uid(entropy_srcs=["fetalhc-sr", sop_instance_uid, str(frame), model_version])
    return series, instance


def ellipse_graphic_data(m: HeadMeasurement, rows: int, columns: int) -> np.ndarray | None:
    """The SCOORD ELLIPSE points (4, 2) as (column, row) of the full image, or None when not exact.

    Order (PS3.3 C.18.6.1.2): major axis endpoints, then minor axis endpoints. Image coordinates
    (PS3.3 C.18.6.1.1): 0.0\\0.0 is the top-left corner of the top-left pixel, so a pixel centre
    sits at +0.5. The row's ellipse is in mm from the region's top-left pixel centre; with
    anisotropic pixels the mm ellipse's axes are not the pixel ellipse's, so the axes are taken
    from the mapped shape (singular value decomposition), exactly. None (no SCOORD rather than a
    wrong one) when the calibration source does not say where the region starts, or the region
    lies outside the image.
    """
    if m.ellipse_mm is None or m.spacing_mm is None or m.spacing_source not in _FRAME_SOURCES:
        return None
    if m.spacing_source == "us_region" and m.region_origin_px is None:
        return None
    x0, y0 = m.region_origin_px or (0, 0)
    if not (0 <= x0 < columns and 0 <= y0 < rows):
        return None
    cx, cy, a, b, angle = (float(v) for v in m.ellipse_mm)
    sx, sy = (float(v) for v in m.spacing_mm)
    if not all(math.isfinite(v) for v in (cx, cy, a, b, angle, sx, sy)) or min(a, b, sx, sy) <= 0:
        return None
    c, s = math.cos(angle), math.sin(angle)
    # Ellipse points p = centre + R diag(a, b) u (|u| = 1) in mm; in pixels q = S p, S = diag(1/sx, 1/sy).
    shape = np.diag([1 / sx, 1 / sy]) @ np.array([[c, -s], [s, c]]) @ np.diag([a, b])
    u, sigma, _ = np.linalg.svd(shape)
    centre = np.array([x0 + cx / sx + 0.5, y0 + cy / sy + 0.5])
    major, minor = u[:, 0] * sigma[0], u[:, 1] * sigma[1]
    return np.array([centre - major, centre + major, centre - minor, centre + minor], dtype=float)


def _evidence(source: Dataset) -> Dataset:
    """A header copy with the Type 2 patient/study attributes highdicom reads present (empty if absent).

    (0010,0010) Patient's Name is left empty: the SR is filed by Patient ID and Study Instance UID under a study
    the PACS already names, and an SR waiting in the outbox should not spell out who the patient is.
    """
    ds = Dataset()
    for element in source:
        if element.tag.group not in (0x7FE0,) and element.keyword not in ("PixelData", "FloatPixelData"):
            ds.add(element)
    if "PatientName" in ds:
        del ds.PatientName  # the element is the source's own object: replaced, never changed in place
    ds.PatientName = ""
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                    "StudyDate", "StudyTime", "ReferringPhysicianName"):
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _num(name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept, relationship: str = "CONTAINS"
         ) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=name, value=float(value), unit=unit, relationship_type=relationship)


def _code(name: hd.sr.CodedConcept, value: hd.sr.CodedConcept) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type="CONTAINS")


def _flag_code(flag: str) -> hd.sr.CodedConcept:
    """The local code of a review flag (models.geometry.biometry, models.segmentation.segment); CodeValue is SH,
    16 characters."""
    value, meaning = FLAG_CODES.get(flag, (flag.upper()[:16], flag.replace("_", " ").capitalize()))
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, meaning)


def _image(source: Dataset, frame: int, relationship: str) -> hd.sr.ImageContentItem:
    """(121112, DCM, "Source of Measurement"): the source instance (its frame when multi-frame)."""
    multiframe = int(source.get("NumberOfFrames", 1) or 1) > 1
    return hd.sr.ImageContentItem(
        name=codes.DCM.SourceOfMeasurement, referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        referenced_frame_numbers=frame if multiframe else None, relationship_type=relationship)


def _biometry_group(source: Dataset, m: HeadMeasurement) -> hd.sr.ContainerContentItem:
    algorithm = hd.sr.AlgorithmIdentification(name=m.model_name, version=m.model_version)
    hc = _num(HEAD_CIRCUMFERENCE, m.hc_mm, MM)
    hc.ContentSequence = hd.sr.ContentSequence(list(algorithm))
    points = ellipse_graphic_data(m, int(source.Rows), int(source.Columns))
    if points is not None:
        region = hd.sr.ScoordContentItem(name=codes.DCM.ImageRegion, graphic_type="ELLIPSE", graphic_data=points,
                                         relationship_type="INFERRED FROM")
        region.ContentSequence = hd.sr.ContentSequence([_image(source, m.frame, "SELECTED FROM")])
        hc.ContentSequence.append(region)
    else:
        hc.ContentSequence.append(_image(source, m.frame, "INFERRED FROM"))
    items: list[hd.sr.ContentItem] = [hc]
    for name, value in ((BIPARIETAL_DIAMETER, m.bpd_mm), (OCCIPITAL_FRONTAL_DIAMETER, m.ofd_mm)):
        item = _num(name, value, MM)
        item.ContentSequence = hd.sr.ContentSequence(
            [*hd.sr.AlgorithmIdentification(name=m.model_name, version=m.model_version),
             _image(source, m.frame, "INFERRED FROM")])
        items.append(item)
    if m.ga_estimate_days is not None and m.ga_formula in GA_EQUATIONS:  # "..._out_of_range": not reported
        ga = _num(GESTATIONAL_AGE, round(float(m.ga_estimate_days), 1), DAYS)
        ga.ContentSequence = hd.sr.ContentSequence([hd.sr.CodeContentItem(
            name=codes.DCM.Equation, value=GA_EQUATIONS[m.ga_formula], relationship_type="HAS CONCEPT MOD")])
        items.append(ga)
    if m.quality is not None:
        items.append(_num(QUALITY, round(float(m.quality), 4), NO_UNITS))
    items.append(_code(STATUS, STATUS_VALUES[m.status]))
    items.extend(_code(REVIEW_FLAG, _flag_code(flag)) for flag in m.flags)
    if m.status == "needs_review":
        why = ", ".join(m.flags) or "flagged by the algorithm"
        comment = f"NEEDS REVIEW ({why}): automated measurement, check the image before using these values."
    else:
        comment = "Automated measurement, not verified by a clinician."
    items.append(hd.sr.TextContentItem(name=codes.DCM.Comment, value=comment[:1024], relationship_type="CONTAINS"))
    group = hd.sr.ContainerContentItem(name=codes.DCM.BiometryGroup, relationship_type="CONTAINS")
    group.ContentSequence = hd.sr.ContentSequence(items)
    return group


def build_sr(source: Dataset, m: HeadMeasurement, when: dt.datetime | None = None) -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR of ``m``, in the source's study (new fetalhc series), patient copied from it.

    Args:
        source: the measured instance's header (pixel data not needed).
        m: the measurement (its SOP Instance UID must be the source's).
        when: content date/time (default now, local time).
    Raises:
        SrError: the measurement does not belong to ``source``, or the source lacks the UIDs an SR needs.
    """
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "Rows", "Columns"):
        if not source.get(keyword):
            raise SrError(f"the source header has no {keyword}; cannot reference it from an SR")
    if str(source.SOPInstanceUID) != m.sop_instance_uid:
        raise SrError("the measurement's SOP Instance UID is not the source instance's")
    evidence = _evidence(source)
    series_uid, sop_uid = sr_uids(str(source.StudyInstanceUID), m.sop_instance_uid, m.frame, m.model_version)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["fetalhc-device", m.model_name, m.model_version]),
            name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=m.model_name[:64]))
    biometry = hd.sr.ContainerContentItem(name=codes.DCM.FetalBiometry, relationship_type="CONTAINS")
    biometry.ContentSequence = hd.sr.ContentSequence([_biometry_group(source, m)])
    root = hd.sr.ContainerContentItem(name=codes.DCM.OBGYNUltrasoundProcedureReport)
    root.ContentSequence = hd.sr.ContentSequence([
        *hd.sr.LanguageOfContentItemAndDescendants(hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")),
        *hd.sr.ObservationContext(observer_person_context=None, observer_device_context=observer),
        biometry,
    ])
    sr = hd.sr.ComprehensiveSR(
        evidence=[evidence], content=root, series_instance_uid=series_uid, series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        is_final=m.status == "measured", is_verified=False, series_description=SERIES_DESCRIPTION)
    when = when or dt.datetime.now()
    sr.ContentDate, sr.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = PRIVATE_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def write_sr(folder: str | Path, sr: Dataset) -> Path:
    """Save ``sr`` as ``<folder>/<SOP Instance UID>.dcm`` (replacing an earlier one); returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sr.SOPInstanceUID}.dcm"
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SR_FILE_MODE), "wb") as f:
        os.fchmod(f.fileno(), SR_FILE_MODE)  # an SR names its patient: owner only, whatever the umask
        sr.save_as(f, enforce_file_format=True)
    tmp.replace(path)
    return path
