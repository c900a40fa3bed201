"""Reading a scanner's OB-GYN ultrasound report (DICOM SR, PS3.16 TID 5000): dating and the sonographer's biometry.

The report is read by concept codes anywhere in its content tree, never by the positions TID 5000
gives its containers, because vendors nest differently (a Summary inside a Fetus Summary, biometry
two containers deeper, measurements repeated in a vendor's own section). What is read:

======================================  ==================================================  ==========
fact                                    concept (coding scheme)                             value type
======================================  ==================================================  ==========
LMP                                     (11955-2, LN) or (8665-2, LN) "LMP" (CID 12003)     DATE
EDD                                     (11778-8, LN) "EDD"                                 DATE
EDD from LMP                            (11779-6, LN) "EDD from LMP"                        DATE
GA by LMP                               (11885-1, LN) "Gestational Age by LMP" (CID 12019)  NUM d|wk
composite ultrasound age                (11888-5, LN) "Composite Ultrasound Age"            NUM d|wk
HC, BPD, OFD                            (11984-2 / 11820-8 / 11851-3, LN)                   NUM mm|cm|m
fetus of a container's subtree (TID    (11951-1, LN) "Fetus ID"; or (121030, DCM)          TEXT
1008 Subject Context, Fetus)            "Subject ID" beside Subject Class (121024, DCM) =
                                        (121026, DCM) "Fetus"
number of fetuses                       (11878-6, LN) "Number of Fetuses by US" or          NUM
                                        (55281-0, LN) "Number of Fetuses"
======================================  ==================================================  ==========

A fetus context item applies to the container holding it and everything below it (wherever it sits
among that container's children), so two fetuses' values stay apart. Biometry outside any fetus
context belongs to the single fetus of a one-fetus report; in a report that names several fetuses it
is left out (with a note), never given to one of them. Several values of one measurement for one fetus:
the one with (121404, DCM) Selection Status, else the one with (121401, DCM) Derivation = Mean
((R-00317, SRT) / (373098007, SCT)), else the mean of them all.

Errors, chosen so that nothing is lost and nothing is guessed:

* a report that cannot be recorded at all (no SOP Instance UID or Study Instance UID, no content tree,
  a content tree that cannot be walked) raises ``MalformedReportError`` (reason ``malformed_report``),
  carrying whatever UIDs it could read so the caller can record the report as malformed;
* a dataset that is not an OB-GYN report raises ``UnsupportedImageError`` (reason ``not_ob_report``);
* a single unusable item (wrong value type, no value, a measurement without units or in units that
  are not a length, a date that is not a date, a value outside what a pregnancy allows) is left out
  and described in ``ObReport.notes``; the rest of the report is kept. ``notes`` is empty for a clean
  report. Values are never repaired (a TEXT "2026-05-01" where a DATE belongs is left out, not parsed).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_io.errors import MalformedReportError, UnsupportedImageError
from dicom_io.frames import PARSE_ERRORS
from dicom_io.text import clean_text

# (0008,0016) SOP Class UIDs of the SR classes a TID 5000 report is stored in.
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
EXTENSIBLE_SR = "1.2.840.10008.5.1.4.1.1.88.34"
OB_REPORT_SOP_CLASSES = frozenset({COMPREHENSIVE_SR, ENHANCED_SR, EXTENSIBLE_SR})

Code = tuple[str, str]  # (Code Value, Coding Scheme Designator)

# Document titles of CID 12024 "OB-GYN Ultrasound Report Document Title" ((0040,A043) of the root).
OB_DOCUMENT_TITLES: frozenset[Code] = frozenset({
    ("125000", "DCM"),  # OB-GYN Ultrasound Procedure Report
    ("24869-0", "LN"),  # US Pelvis
    ("268445003", "SCT"), ("P5-B005A", "SRT"),  # Ultrasound scan - obstetric
})
TEMPLATE_OB_GYN = ("5000", "DCMR")  # (0040,DB00) Template Identifier, (0008,0105) Mapping Resource

LMP_CODES: frozenset[Code] = frozenset({("11955-2", "LN"), ("8665-2", "LN")})
EDD: Code = ("11778-8", "LN")
EDD_FROM_LMP: Code = ("11779-6", "LN")
GA_BY_LMP: Code = ("11885-1", "LN")
COMPOSITE_US_AGE: Code = ("11888-5", "LN")
HC: Code = ("11984-2", "LN")
BPD: Code = ("11820-8", "LN")
OFD: Code = ("11851-3", "LN")
FETUS_ID: Code = ("11951-1", "LN")
SUBJECT_ID: Code = ("121030", "DCM")
SUBJECT_CLASS: Code = ("121024", "DCM")
SUBJECT_CLASS_FETUS: Code = ("121026", "DCM")
NUMBER_OF_FETUSES: frozenset[Code] = frozenset({("11878-6", "LN"), ("55281-0", "LN")})
DERIVATION: Code = ("121401", "DCM")
MEAN_CODES: frozenset[Code] = frozenset({("R-00317", "SRT"), ("373098007", "SCT")})
SELECTION_STATUS: Code = ("121404", "DCM")

BIOMETRY: dict[Code, str] = {HC: "hc", BPD: "bpd", OFD: "ofd"}
_NAMES: dict[Code, str] = {HC: "HC", BPD: "BPD", OFD: "OFD", EDD: "EDD", EDD_FROM_LMP: "EDD from LMP",
                           GA_BY_LMP: "GA by LMP", COMPOSITE_US_AGE: "Composite Ultrasound Age",
                           **{c: "LMP" for c in LMP_CODES}}
# UCUM length units (0040,08EA) Measurement Units Code Sequence -> millimetres per unit.
LENGTH_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
# UCUM time units -> days (GA items; months are not a fixed number of days and are refused).
TIME_DAYS = {"d": 1.0, "wk": 7.0}
# What a pregnancy allows: GA 0..44 weeks; HC up to 500 mm, BPD/OFD up to 200 mm (term HC is ~350 mm).
MAX_GA_DAYS = 308
MAX_MM = {"hc": 500.0, "bpd": 200.0, "ofd": 200.0}
MAX_DEPTH = 64  # content tree nesting walked; deeper is malformed (or hostile)


class GaKind(StrEnum):
    """Which GA the report states (``ObReport.ga_kind``)."""

    LMP = "lmp"  # (11885-1, LN) Gestational Age by LMP
    COMPOSITE_US = "composite_us"  # (11888-5, LN) Composite Ultrasound Age


@dataclass(frozen=True)
class FetusBiometry:
    """The sonographer's head biometry of one fetus, in millimetres (None: not in the report).

    ``fetus_id``: the report's (11951-1, LN) Fetus ID (or fetus Subject ID), None in a report that names
    no fetus; ``fetus_number``: 1-based, in the order the report first mentions each fetus.
    """

    fetus_number: int
    fetus_id: str | None = None
    hc_mm: float | None = None
    bpd_mm: float | None = None
    ofd_mm: float | None = None

    def __post_init__(self) -> None:
        if self.fetus_number < 1:
            raise ValueError(f"fetus_number starts at 1, not {self.fetus_number}")
        for name in ("hc_mm", "bpd_mm", "ofd_mm"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive length in mm, not {value!r}")


@dataclass(frozen=True)
class ObReport:
    """What an OB-GYN ultrasound report says about dating and head biometry, with its identity.

    Dates are the report's own; ``ga_days_at_report`` is the GA it states for its study date and
    ``ga_kind`` which one. ``fetuses``: every fetus the report names (values None where it has no
    such measurement), or one unnamed fetus; ``declared_fetuses``: (11878-6/55281-0, LN) when stated.
    ``notes``: items left out and why (empty for a clean report).
    """

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str = ""
    sop_class_uid: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_birth_date: dt.date | None = None
    accession_number: str = ""
    study_date: dt.date | None = None
    content_datetime: dt.datetime | None = None  # (0008,0023)/(0008,0033): when the report was made
    lmp: dt.date | None = None
    edd: dt.date | None = None
    edd_from_lmp: dt.date | None = None
    ga_days_at_report: float | None = None
    ga_kind: GaKind | None = None
    fetuses: tuple[FetusBiometry, ...] = ()
    declared_fetuses: int | None = None
    manufacturer: str = ""
    manufacturer_model_name: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.sop_instance_uid or not self.study_instance_uid:
            raise ValueError("an ObReport needs its SOP Instance UID and Study Instance UID")
        if (self.ga_days_at_report is None) != (self.ga_kind is None):
            raise ValueError("ga_days_at_report and ga_kind go together")
        if [f.fetus_number for f in self.fetuses] != list(range(1, len(self.fetuses) + 1)):
            raise ValueError("fetuses are numbered 1..n in order")

    @property
    def number_of_fetuses(self) -> int:
        """Fetuses in the pregnancy: the most of what the report states (11878-6) and the fetuses it names (>= 1)."""
        return max(self.declared_fetuses or 0, len(self.fetuses), 1)

    def fetus(self, which: int | str) -> FetusBiometry | None:
        """One fetus by number (1-based) or by its Fetus ID; None when the report has no such fetus."""
        for f in self.fetuses:
            if (isinstance(which, int) and f.fetus_number == which) or (isinstance(which, str) and f.fetus_id == which):
                return f
        return None


# ---------------------------------------------------------------------------------------------------
# recognising


def _code_of(seq_item: Any) -> Code | None:
    try:
        return (str(seq_item.CodeValue).strip(), str(seq_item.CodingSchemeDesignator).strip())
    except PARSE_ERRORS:
        return None


def _first_code(ds: Dataset, keyword: str) -> Code | None:
    """The first code of a code sequence attribute, None when absent or unreadable."""
    try:
        seq = ds.get(keyword)
        if not seq:
            return None
        return _code_of(seq[0])
    except PARSE_ERRORS:
        return None


def _text(ds: Dataset, keyword: str) -> str:
    """A text attribute without padding, NUL or other control characters (``dicom_io.text``)."""
    try:
        return clean_text(ds.get(keyword))[0]
    except PARSE_ERRORS:
        return ""


def is_ob_report(ds: Dataset) -> bool:
    """True for an OB-GYN ultrasound SR: cheap, top-level attributes only, never raises.

    (0008,0016) SOP Class UID is Comprehensive, Enhanced or Extensible SR and either the document
    title (0040,A043) Concept Name Code Sequence is in CID 12024 (e.g. (125000, DCM, "OB-GYN
    Ultrasound Procedure Report")) or (0040,A504) Content Template Sequence names TID 5000 (DCMR).
    Works on a header read with ``stop_before_pixels``.
    """
    try:
        if _text(ds, "SOPClassUID") not in OB_REPORT_SOP_CLASSES:
            return False
        if _first_code(ds, "ConceptNameCodeSequence") in OB_DOCUMENT_TITLES:
            return True
        for item in ds.get("ContentTemplateSequence") or ():
            if (_text(item, "TemplateIdentifier"), _text(item, "MappingResource")) == TEMPLATE_OB_GYN:
                return True
    except PARSE_ERRORS:
        return False
    return False


# ---------------------------------------------------------------------------------------------------
# parsing


def read_ob_report(path: str | Path) -> ObReport:
    """Read and parse an OB-GYN report file (see ``parse_ob_report``); unreadable files raise ``DicomError``."""
    from dicom_io.reader import (
        read_dataset,  # the reader's own parse and its reasons (not_dicom, truncated...)
    )

    return parse_ob_report(read_dataset(path, stop_before_pixels=True))


def _date(value: object) -> dt.date | None:
    """A DA value (YYYYMMDD) as a date; None when blank or not a real date (month 13, year 0200...)."""
    text = str(value or "").strip("\x00 ")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        day = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return day if 1900 <= day.year <= 2200 else None


def _content_datetime(ds: Dataset) -> dt.datetime | None:
    day = _date(_text(ds, "ContentDate"))
    if day is None:
        return None
    digits = "".join(ch for ch in _text(ds, "ContentTime").split(".")[0] if ch.isdigit())[:6].ljust(6, "0")
    try:
        return dt.datetime.combine(day, dt.time(int(digits[:2]), int(digits[2:4]), int(digits[4:6])))
    except ValueError:
        return dt.datetime.combine(day, dt.time())


@dataclass
class _Candidate:
    value_mm: float
    selected: bool
    mean: bool


@dataclass
class _Collected:
    """What the walk found, before choosing and checking."""

    dates: dict[Code, list[tuple[dt.date, str | None]]] = field(default_factory=dict)
    ga: dict[Code, list[tuple[float, str | None]]] = field(default_factory=dict)
    biometry: dict[str | None, dict[str, list[_Candidate]]] = field(default_factory=dict)
    fetus_order: list[str] = field(default_factory=list)
    declared_fetuses: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_ob_report(ds: Dataset) -> ObReport:
    """Parse an OB-GYN SR dataset into an ``ObReport`` (see the module docstring for rules and errors).

    Raises:
        UnsupportedImageError: not an OB-GYN report (reason ``not_ob_report``).
        MalformedReportError: an OB-GYN report that cannot be recorded (reason ``malformed_report``).
    """
    if not is_ob_report(ds):
        raise UnsupportedImageError(
            f"not an OB-GYN ultrasound report: SOP class {_text(ds, 'SOPClassUID') or 'missing'}, document title "
            f"{_first_code(ds, 'ConceptNameCodeSequence')} (wanted (125000, DCM) or template TID 5000)",
            reason="not_ob_report")
    sop_uid, study_uid = _text(ds, "SOPInstanceUID"), _text(ds, "StudyInstanceUID")
    if not sop_uid or not study_uid:
        missing = [n for n, v in (("(0008,0018) SOP Instance UID", sop_uid),
                                  ("(0020,000D) Study Instance UID", study_uid)) if not v]
        raise MalformedReportError(f"OB-GYN report without {' and '.join(missing)}: it cannot be recorded",
                                   sop_uid, study_uid)
    try:
        content = ds.get("ContentSequence")
    except PARSE_ERRORS as exc:
        raise MalformedReportError(f"OB-GYN report {sop_uid}: (0040,A730) Content Sequence unreadable ({exc})",
                                   sop_uid, study_uid) from None
    if not isinstance(content, Sequence) or len(content) == 0:
        raise MalformedReportError(f"OB-GYN report {sop_uid} has no content: (0040,A730) Content Sequence "
                                   "is missing or empty", sop_uid, study_uid)
    found = _Collected()
    try:
        _walk(ds, None, 0, found)
    except (RecursionError, _TooDeep):
        raise MalformedReportError(f"OB-GYN report {sop_uid}: content tree nested deeper than {MAX_DEPTH} levels",
                                   sop_uid, study_uid) from None
    except PARSE_ERRORS as exc:
        raise MalformedReportError(f"OB-GYN report {sop_uid}: content tree cannot be walked "
                                   f"({type(exc).__name__}: {exc})", sop_uid, study_uid) from None
    study_date = _date(_text(ds, "StudyDate"))
    content_dt = _content_datetime(ds)
    reference = study_date or (content_dt.date() if content_dt else None)
    notes = found.notes
    lmp = _choose_date(found, LMP_CODES, notes)
    edd = _choose_date(found, {EDD}, notes)
    edd_from_lmp = _choose_date(found, {EDD_FROM_LMP}, notes)
    if reference is not None:
        lmp = _plausible(lmp, "LMP", reference, lambda d: (reference - d).days, notes)
        edd = _plausible(edd, "EDD", reference, lambda d: 280 - (d - reference).days, notes)
        edd_from_lmp = _plausible(edd_from_lmp, "EDD from LMP", reference, lambda d: 280 - (d - reference).days,
                                  notes)
    ga_days, ga_kind = _choose_ga(found, notes)
    fetuses = _fetuses(found, notes)
    declared = max(found.declared_fetuses) if found.declared_fetuses else None
    return ObReport(
        sop_instance_uid=sop_uid, study_instance_uid=study_uid, series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"), patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"), patient_birth_date=_date(_text(ds, "PatientBirthDate")),
        accession_number=_text(ds, "AccessionNumber"), study_date=study_date, content_datetime=content_dt,
        lmp=lmp, edd=edd, edd_from_lmp=edd_from_lmp, ga_days_at_report=ga_days, ga_kind=ga_kind,
        fetuses=fetuses, declared_fetuses=declared, manufacturer=_text(ds, "Manufacturer"),
        manufacturer_model_name=_text(ds, "ManufacturerModelName"), notes=tuple(notes))


class _TooDeep(Exception):
    pass


def _items(node: Dataset) -> Iterator[Dataset]:
    seq = node.get("ContentSequence")
    if seq is None:
        return
    if not isinstance(seq, Sequence):
        raise TypeError("(0040,A730) Content Sequence is not a sequence")
    yield from seq


def _fetus_of(children: list[Dataset], fetus: str | None, found: _Collected) -> str | None:
    """The fetus a container's subtree is about: a TID 1008 item among its children, else the inherited one."""
    subject_is_fetus = any(_first_code(c, "ConceptNameCodeSequence") == SUBJECT_CLASS
                           and _first_code(c, "ConceptCodeSequence") == SUBJECT_CLASS_FETUS for c in children)
    for child in children:
        concept = _first_code(child, "ConceptNameCodeSequence")
        if concept == FETUS_ID or (concept == SUBJECT_ID and subject_is_fetus):
            value = _text(child, "TextValue") if _text(child, "ValueType") == "TEXT" else ""
            if not value:
                found.notes.append(f"{'Fetus ID (11951-1)' if concept == FETUS_ID else 'Subject ID (121030)'}: "
                                   "not a TEXT item with a value; its section is read without a fetus")
                continue
            if value not in found.fetus_order:
                found.fetus_order.append(value)
            return value
    return fetus


def _walk(node: Dataset, fetus: str | None, depth: int, found: _Collected) -> None:
    """Visit every content item below ``node``, carrying the fetus context down."""
    if depth > MAX_DEPTH:
        raise _TooDeep
    children = list(_items(node))
    fetus = _fetus_of(children, fetus, found)
    for child in children:
        if not isinstance(child, Dataset):
            raise TypeError("a content item is not a dataset")
        concept = _first_code(child, "ConceptNameCodeSequence")
        if concept is not None:
            try:
                _read_item(child, concept, fetus, found)
            except PARSE_ERRORS as exc:  # one unreadable item: noted, the report goes on
                found.notes.append(f"{_NAMES.get(concept, concept[0])}: unreadable item ({type(exc).__name__}); "
                                   "left out")
        if "ContentSequence" in child and concept not in BIOMETRY:  # a NUM's own children are its modifiers
            _walk(child, fetus, depth + 1, found)


def _where(fetus: str | None) -> str:
    return f", fetus {fetus}" if fetus else ""


def _read_item(item: Dataset, concept: Code, fetus: str | None, found: _Collected) -> None:
    value_type = _text(item, "ValueType")
    name = _NAMES.get(concept)
    if concept in LMP_CODES or concept in (EDD, EDD_FROM_LMP):
        code = next(iter(LMP_CODES)) if concept in LMP_CODES else concept
        if value_type != "DATE":
            found.notes.append(f"{name} ({concept[0]}): value type {value_type or 'missing'}, expected DATE; left out")
            return
        day = _date(_text(item, "Date"))
        if day is None:
            found.notes.append(f"{name} ({concept[0]}): (0040,A121) Date {_text(item, 'Date')!r} is not a date; "
                               "left out")
            return
        found.dates.setdefault(code, []).append((day, fetus))
    elif concept in (GA_BY_LMP, COMPOSITE_US_AGE):
        number = _number(item, concept, fetus, TIME_DAYS, "a time (d, wk)", found)
        if number is not None:
            if not 0 < number <= MAX_GA_DAYS:
                found.notes.append(f"{name} ({concept[0]}{_where(fetus)}): {number:g} days is not a gestational "
                                   f"age (0..{MAX_GA_DAYS}); left out")
                return
            found.ga.setdefault(concept, []).append((number, fetus))
    elif concept in BIOMETRY:
        key = BIOMETRY[concept]
        number = _number(item, concept, fetus, LENGTH_MM, "a length (mm, cm, m)", found)
        if number is None:
            return
        if not 0 < number <= MAX_MM[key]:
            found.notes.append(f"{name} ({concept[0]}{_where(fetus)}): {number:g} mm is outside 0..{MAX_MM[key]:g} "
                               "mm; left out")
            return
        selected, mean = False, False
        for mod in _items(item):
            mod_concept = _first_code(mod, "ConceptNameCodeSequence")
            selected |= mod_concept == SELECTION_STATUS
            mean |= mod_concept == DERIVATION and _first_code(mod, "ConceptCodeSequence") in MEAN_CODES
        found.biometry.setdefault(fetus, {}).setdefault(key, []).append(_Candidate(number, selected, mean))
    elif concept in NUMBER_OF_FETUSES:
        number = _number(item, concept, None, {"1": 1.0, "{fetuses}": 1.0, "{#}": 1.0}, "no units (1)", found,
                         quiet=True)
        if number is not None and number == int(number) and 1 <= number <= 10:
            found.declared_fetuses.append(int(number))


def _number(item: Dataset, concept: Code, fetus: str | None, units: dict[str, float], wanted: str,
            found: _Collected, quiet: bool = False) -> float | None:
    """A NUM item's value converted by its UCUM unit (0040,08EA); None, with a note, when unusable."""
    label = f"{_NAMES.get(concept, concept[0])} ({concept[0]}{_where(fetus)})"

    def note(text: str) -> None:
        if not quiet:
            found.notes.append(f"{label}: {text}; left out")

    if _text(item, "ValueType") != "NUM":
        note(f"value type {_text(item, 'ValueType') or 'missing'}, expected NUM")
        return None
    measured = item.get("MeasuredValueSequence")
    if not measured:
        note("no value ((0040,A300) Measured Value Sequence empty)")
        return None
    value = measured[0]
    try:
        number = float(value.NumericValue)
    except PARSE_ERRORS:
        note(f"(0040,A30A) Numeric Value {_text(value, 'NumericValue')!r} is not a number")
        return None
    if not math.isfinite(number):
        note(f"(0040,A30A) Numeric Value {number} is not finite")
        return None
    unit = _first_code(value, "MeasurementUnitsCodeSequence")
    if unit is None:
        note("no units ((0040,08EA) Measurement Units Code Sequence missing)")
        return None
    if unit[1] != "UCUM" or unit[0] not in units:
        note(f"units ({unit[0]}, {unit[1]}) are not {wanted}")
        return None
    return number * units[unit[0]]


def _choose_date(found: _Collected, codes: Iterable[Code], notes: list[str]) -> dt.date | None:
    values = [day for code in codes for day, _ in found.dates.get(code, [])]
    distinct = sorted(set(values))
    if len(distinct) > 1:
        name = _NAMES[next(iter(codes))]
        notes.append(f"{name}: the report gives different dates ({', '.join(d.isoformat() for d in distinct)}); "
                     "left out")
        return None
    return distinct[0] if distinct else None


def _plausible(day: dt.date | None, name: str, reference: dt.date, ga_of: Any, notes: list[str]) -> dt.date | None:
    """Keep a dating date only if the GA it implies on the study date is 0..44 weeks."""
    if day is None:
        return None
    ga = ga_of(day)
    if 0 <= ga <= MAX_GA_DAYS:
        return day
    notes.append(f"{name} {day.isoformat()} gives a GA of {ga} days on {reference.isoformat()} "
                 f"(not 0..{MAX_GA_DAYS}); left out")
    return None


def _choose_ga(found: _Collected, notes: list[str]) -> tuple[float | None, GaKind | None]:
    """GA by LMP (one study-level value) first, else the composite ultrasound age when every fetus agrees."""
    for code, kind in ((GA_BY_LMP, GaKind.LMP), (COMPOSITE_US_AGE, GaKind.COMPOSITE_US)):
        distinct = sorted({round(days, 3) for days, _ in found.ga.get(code, [])})
        if len(distinct) == 1:
            return distinct[0], kind
        if len(distinct) > 1:
            notes.append(f"{_NAMES[code]}: several values ({', '.join(f'{d:g}' for d in distinct)} days, per fetus "
                         "or repeated); not used as the report's GA")
    return None, None


def _pick(candidates: list[_Candidate]) -> float:
    """Selection Status (121404) first, then Derivation = Mean (121401), else the mean of all values."""
    for chosen in ([c for c in candidates if c.selected], [c for c in candidates if c.mean]):
        if chosen:
            return chosen[-1].value_mm
    return sum(c.value_mm for c in candidates) / len(candidates)


def _fetuses(found: _Collected, notes: list[str]) -> tuple[FetusBiometry, ...]:
    """Every fetus the report names (biometry or not), in order; unnamed biometry only in a one-fetus report."""
    groups = dict(found.biometry)
    unassigned = groups.pop(None, None)
    named: list[str | None] = list(found.fetus_order)
    if unassigned:
        if len(named) > 1:
            notes.append(f"biometry without a Fetus ID in a report of {len(named)} fetuses "
                         f"({', '.join(sorted(unassigned)).upper()}); left out, not given to any of them")
        elif len(named) == 1:  # a one-fetus report that names its fetus in some sections only
            merged = groups.setdefault(named[0], {})
            for key, values in unassigned.items():
                merged.setdefault(key, []).extend(values)
        else:
            groups[None] = unassigned
            named = [None]
    out = []
    for number, fetus_id in enumerate(named, start=1):
        values = {key: _pick(c) for key, c in groups.get(fetus_id, {}).items() if c}
        out.append(FetusBiometry(fetus_number=number, fetus_id=fetus_id, hc_mm=values.get("hc"),
                                 bpd_mm=values.get("bpd"), ofd_mm=values.get("ofd")))
    return tuple(out)
