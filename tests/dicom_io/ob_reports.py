"""OB-GYN ultrasound reports (DICOM SR, TID 5000) written by tests: standard and vendor-style trees.

Reusable from any test (``from tests.dicom_io.ob_reports import Fetus, write_ob_report``)::

    path = write_ob_report(tmp_path / "report.dcm", study_uid=study, edd=dt.date(2026, 7, 1),
                           fetuses=(Fetus("A", hc_mm=171.0), Fetus("B", hc_mm=168.5)))

``ob_report_dataset`` returns the dataset instead; the item builders (``container``, ``num``,
``date_item``, ``text_item``, ``code_item``) make trees of any shape (malformed ones included) to put
in ``extra_content`` or to assemble by hand with ``sr_dataset``. Plain pydicom: every attribute
written is visible here, and a test can break any of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydicom import uid as pdu
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import generate_uid

from dicom_io.ob_report import COMPREHENSIVE_SR

Concept = tuple[str, str, str]  # (Code Value, Coding Scheme Designator, Code Meaning)

OB_GYN_REPORT: Concept = ("125000", "DCM", "OB-GYN Ultrasound Procedure Report")
SUMMARY: Concept = ("121111", "DCM", "Summary")
PATIENT_CHARACTERISTICS: Concept = ("121118", "DCM", "Patient Characteristics")
FETUS_SUMMARY: Concept = ("125008", "DCM", "Fetus Summary")
FETAL_BIOMETRY: Concept = ("125002", "DCM", "Fetal Biometry")
BIOMETRY_GROUP: Concept = ("125005", "DCM", "Biometry Group")
LMP: Concept = ("11955-2", "LN", "LMP")
EDD: Concept = ("11778-8", "LN", "EDD")
EDD_FROM_LMP: Concept = ("11779-6", "LN", "EDD from LMP")
GA_BY_LMP: Concept = ("11885-1", "LN", "Gestational Age by LMP")
COMPOSITE_US_AGE: Concept = ("11888-5", "LN", "Composite Ultrasound Age")
NUMBER_OF_FETUSES: Concept = ("11878-6", "LN", "Number of Fetuses by US")
HC: Concept = ("11984-2", "LN", "Head Circumference")
BPD: Concept = ("11820-8", "LN", "Biparietal Diameter")
OFD: Concept = ("11851-3", "LN", "Occipital-Frontal Diameter")
FETUS_ID: Concept = ("11951-1", "LN", "Fetus ID")
SUBJECT_CLASS: Concept = ("121024", "DCM", "Subject Class")
SUBJECT_CLASS_FETUS: Concept = ("121026", "DCM", "Fetus")
SUBJECT_ID: Concept = ("121030", "DCM", "Subject ID")
DERIVATION: Concept = ("121401", "DCM", "Derivation")
MEAN: Concept = ("R-00317", "SRT", "Mean")
IMAGING_MEASUREMENT_REPORT: Concept = ("126000", "DCM", "Imaging Measurement Report")
VENDOR_EXAM: Concept = ("OBEXAM", "99VENDOR", "OB exam")
VENDOR_FETUS: Concept = ("FETUS", "99VENDOR", "Fetus")
VENDOR_MEASUREMENT: Concept = ("MEAS", "99VENDOR", "Measurement")
UNITS: dict[str, Concept] = {"mm": ("mm", "UCUM", "mm"), "cm": ("cm", "UCUM", "cm"), "d": ("d", "UCUM", "days"),
                             "wk": ("wk", "UCUM", "weeks"), "1": ("1", "UCUM", "no units")}
STUDY_DATE = dt.date(2026, 3, 2)


def code(concept: Concept) -> Dataset:
    """A code sequence item: (0008,0100) Code Value, (0008,0102) Scheme, (0008,0104) Meaning."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = concept
    return item


def _item(value_type: str, concept: Concept, relationship: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship  # (0040,A010)
    item.ValueType = value_type  # (0040,A040)
    item.ConceptNameCodeSequence = [code(concept)]  # (0040,A043)
    return item


def container(concept: Concept, *children: Dataset, relationship: str = "CONTAINS") -> Dataset:
    """A CONTAINER content item holding ``children`` in (0040,A730) Content Sequence."""
    item = _item("CONTAINER", concept, relationship)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = list(children)
    return item


def num(concept: Concept, value: float | str | None, unit: str | None = "mm", relationship: str = "CONTAINS",
        modifiers: Iterable[Dataset] = ()) -> Dataset:
    """A NUM item; ``value`` None writes an empty (0040,A300), ``unit`` None no (0040,08EA)."""
    item = _item("NUM", concept, relationship)
    measured = Dataset()
    if value is not None:
        measured.NumericValue = value if isinstance(value, str) else f"{value:.6g}"  # (0040,A30A) DS
        if unit is not None:
            measured.MeasurementUnitsCodeSequence = [code(UNITS.get(unit, (unit, "UCUM", unit)))]
    item.MeasuredValueSequence = [measured] if value is not None else []
    mods = list(modifiers)
    if mods:
        item.ContentSequence = mods
    return item


def date_item(concept: Concept, day: dt.date | str, relationship: str = "CONTAINS") -> Dataset:
    """A DATE item; a string is written as it is into (0040,A121) Date (to write nonsense)."""
    item = _item("DATE", concept, relationship)
    item.Date = day if isinstance(day, str) else day.strftime("%Y%m%d")
    return item


def text_item(concept: Concept, value: str, relationship: str = "HAS OBS CONTEXT") -> Dataset:
    """A TEXT item ((0040,A160) Text Value)."""
    item = _item("TEXT", concept, relationship)
    item.TextValue = value
    return item


def code_item(concept: Concept, value: Concept, relationship: str = "HAS CONCEPT MOD") -> Dataset:
    """A CODE item ((0040,A168) Concept Code Sequence)."""
    item = _item("CODE", concept, relationship)
    item.ConceptCodeSequence = [code(value)]
    return item


@dataclass(frozen=True)
class Fetus:
    """What a report says about one fetus; lengths in mm (written in ``units``), GA in days."""

    fetus_id: str | None = None
    hc_mm: float | None = None
    bpd_mm: float | None = None
    ofd_mm: float | None = None
    units: str = "mm"  # "mm" or "cm" (values converted when written)
    composite_ga_days: float | None = None


def _lengths(fetus: Fetus) -> list[tuple[Concept, float]]:
    """(concept, value in the fetus's units) of each length the fetus has."""
    scale = {"mm": 1.0, "cm": 0.1}[fetus.units]
    return [(concept, value * scale) for concept, value in
            ((HC, fetus.hc_mm), (BPD, fetus.bpd_mm), (OFD, fetus.ofd_mm)) if value is not None]


def _biometry(fetus: Fetus) -> list[Dataset]:
    return [num(concept, value, fetus.units) for concept, value in _lengths(fetus)]


def _summary_items(lmp: dt.date | None, edd: dt.date | None, edd_from_lmp: dt.date | None,
                   ga_lmp_days: float | None, n_fetuses: int) -> list[Dataset]:
    items = [date_item(c, d) for c, d in ((LMP, lmp), (EDD, edd), (EDD_FROM_LMP, edd_from_lmp)) if d is not None]
    if ga_lmp_days is not None:
        items.append(num(GA_BY_LMP, ga_lmp_days, "d"))
    if n_fetuses > 1:
        items.append(num(NUMBER_OF_FETUSES, n_fetuses, "1"))
    return items


def standard_content(lmp: dt.date | None, edd: dt.date | None, edd_from_lmp: dt.date | None,
                     ga_lmp_days: float | None, fetuses: Sequence[Fetus]) -> list[Dataset]:
    """The root's children as TID 5000 places them: Summary (TID 5001), then per fetus a Fetus Summary
    (TID 5002) and Fetal Biometry (TID 5005) with the TID 1008 Fetus ID, biometry in a Biometry Group."""
    content = [container(SUMMARY, *_summary_items(lmp, edd, edd_from_lmp, ga_lmp_days, len(fetuses)))]
    for fetus in fetuses:
        context = [text_item(FETUS_ID, fetus.fetus_id)] if fetus.fetus_id else []
        if fetus.composite_ga_days is not None:
            content.append(container(FETUS_SUMMARY, *context, num(COMPOSITE_US_AGE, fetus.composite_ga_days, "d")))
        if _biometry(fetus):
            content.append(container(FETAL_BIOMETRY, *context, container(BIOMETRY_GROUP, *_biometry(fetus))))
    return content


def vendor_content(lmp: dt.date | None, edd: dt.date | None, edd_from_lmp: dt.date | None,
                   ga_lmp_days: float | None, fetuses: Sequence[Fetus]) -> list[Dataset]:
    """A vendor's nesting: dating inside a private exam container under Patient Characteristics, each
    fetus in a private container identified by Subject Class + Subject ID placed after its measurements,
    each measurement two containers deeper, written twice with a Derivation = Mean value beside them."""
    dating = container(PATIENT_CHARACTERISTICS, container(VENDOR_EXAM, *_summary_items(
        lmp, edd, edd_from_lmp, ga_lmp_days, len(fetuses))))
    content = [dating]
    for fetus in fetuses:
        measurements = []
        for concept, value in _lengths(fetus):
            unit = fetus.units
            measurements.append(container(VENDOR_MEASUREMENT,
                                          num(concept, value * 0.98, unit), num(concept, value * 1.02, unit),
                                          num(concept, value, unit, modifiers=[code_item(DERIVATION, MEAN)])))
        body = container(FETAL_BIOMETRY, container(BIOMETRY_GROUP, *measurements))
        context = ([code_item(SUBJECT_CLASS, SUBJECT_CLASS_FETUS, "HAS OBS CONTEXT"),
                    text_item(SUBJECT_ID, fetus.fetus_id)] if fetus.fetus_id else [])
        extra = ([container(FETUS_SUMMARY, num(COMPOSITE_US_AGE, fetus.composite_ga_days / 7, "wk"))]
                 if fetus.composite_ga_days is not None else [])
        content.append(container(VENDOR_FETUS, body, *extra, *context))
    return content


def sr_dataset(content: Sequence[Dataset], *, title: Concept | None = OB_GYN_REPORT, template: bool = True,
               sop_class_uid: str = COMPREHENSIVE_SR, study_uid: str | None = None, sop_uid: str | None = None,
               series_uid: str | None = None, study_date: dt.date | None = STUDY_DATE, patient_id: str = "P1",
               manufacturer: str = "Acme Ultrasound", model: str = "Sono 9") -> Dataset:
    """An SR document (the root CONTAINER's attributes at the top level) around ``content``."""
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "SR"
    ds.PatientID = patient_id
    ds.PatientName = "Test^Mother"
    ds.AccessionNumber = "ACC1"
    if study_date is not None:
        ds.StudyDate = study_date.strftime("%Y%m%d")
        ds.ContentDate = ds.StudyDate
        ds.ContentTime = "101500"
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    if title is not None:
        ds.ConceptNameCodeSequence = [code(title)]
    if template:
        tid = Dataset()
        tid.MappingResource, tid.TemplateIdentifier = "DCMR", "5000"  # (0008,0105), (0040,DB00)
        ds.ContentTemplateSequence = [tid]
    ds.ContentSequence = list(content)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pdu.ExplicitVRLittleEndian
    return ds


def ob_report_dataset(*, lmp: dt.date | None = None, edd: dt.date | None = None,
                      edd_from_lmp: dt.date | None = None, ga_lmp_days: float | None = None,
                      fetuses: Sequence[Fetus] = (Fetus(hc_mm=171.0, bpd_mm=47.0, ofd_mm=61.0),),
                      layout: Literal["standard", "vendor"] = "standard",
                      extra_content: Sequence[Dataset] = (), **document: object) -> Dataset:
    """An OB-GYN report dataset; ``document`` goes to ``sr_dataset`` (study_uid, study_date, title...)."""
    build = standard_content if layout == "standard" else vendor_content
    content = build(lmp, edd, edd_from_lmp, ga_lmp_days, fetuses) + list(extra_content)
    return sr_dataset(content, **document)  # type: ignore[arg-type]


def write_ob_report(path: str | Path, **kwargs: object) -> Path:
    """Write ``ob_report_dataset(**kwargs)`` as a DICOM file (Explicit VR Little Endian) and return its path."""
    path = Path(path)
    ob_report_dataset(**kwargs).save_as(path, enforce_file_format=True)  # type: ignore[arg-type]
    return path


def other_sr_dataset(**document: object) -> Dataset:
    """A Comprehensive SR that is not an OB-GYN report (TID 1500 Imaging Measurement Report with an HC)."""
    return sr_dataset([container(("126010", "DCM", "Imaging Measurements"), num(HC, 171.0))],
                      title=IMAGING_MEASUREMENT_REPORT, template=False, **document)  # type: ignore[arg-type]
