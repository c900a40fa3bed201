"""OB-GYN reports (TID 5000) written by the tests, recognised and read back by concept codes."""

from __future__ import annotations

import copy
import datetime as dt
import pickle
from pathlib import Path

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_io import (
    DicomError,
    FetusBiometry,
    GaKind,
    MalformedReportError,
    ObReport,
    UnsupportedImageError,
    is_ob_report,
    parse_ob_report,
    read_header,
    read_ob_report,
)
from dicom_io.ob_report import ENHANCED_SR, EXTENSIBLE_SR
from dicom_io.writer import write_us_image
from tests.dicom_io.ob_reports import (
    BPD,
    EDD,
    FETAL_BIOMETRY,
    FETUS_ID,
    HC,
    LMP,
    OB_GYN_REPORT,
    STUDY_DATE,
    SUMMARY,
    Fetus,
    container,
    date_item,
    num,
    ob_report_dataset,
    other_sr_dataset,
    sr_dataset,
    text_item,
    write_ob_report,
)
from tests.dicom_io.us_files import grey_image

LMP_DAY = dt.date(2025, 9, 1)  # 182 days before STUDY_DATE (2026-03-02)
EDD_DAY = dt.date(2026, 6, 8)  # 280 - 98 = 182 days on STUDY_DATE


def test_standard_report_is_recognised_and_read_from_a_file(tmp_path: Path) -> None:
    path = write_ob_report(tmp_path / "report.dcm", lmp=LMP_DAY, edd=EDD_DAY, edd_from_lmp=EDD_DAY, ga_lmp_days=182,
                           study_uid="1.2.3.4", sop_uid="1.2.3.4.5", series_uid="1.2.3.4.6")
    report = read_ob_report(path)
    assert (report.sop_instance_uid, report.study_instance_uid, report.series_instance_uid) == (
        "1.2.3.4.5", "1.2.3.4", "1.2.3.4.6")
    assert (report.patient_id, report.study_date, report.accession_number) == ("P1", STUDY_DATE, "ACC1")
    assert (report.lmp, report.edd, report.edd_from_lmp) == (LMP_DAY, EDD_DAY, EDD_DAY)
    assert (report.ga_days_at_report, report.ga_kind) == (182.0, GaKind.LMP)
    assert report.fetuses == (FetusBiometry(fetus_number=1, fetus_id=None, hc_mm=171.0, bpd_mm=47.0, ofd_mm=61.0),)
    assert (report.manufacturer, report.manufacturer_model_name) == ("Acme Ultrasound", "Sono 9")
    assert report.content_datetime == dt.datetime(2026, 3, 2, 10, 15)
    assert report.number_of_fetuses == 1 and report.notes == ()


@pytest.mark.parametrize("sop_class", [ENHANCED_SR, EXTENSIBLE_SR])
def test_enhanced_and_extensible_sr_are_recognised(sop_class: str) -> None:
    assert is_ob_report(ob_report_dataset(sop_class_uid=sop_class))


def test_recognised_by_title_alone_or_by_template_alone() -> None:
    assert is_ob_report(ob_report_dataset(template=False))
    assert is_ob_report(ob_report_dataset(title=("X1", "99VENDOR", "Obstetric exam")))  # TID 5000 in (0040,A504)
    assert not is_ob_report(ob_report_dataset(title=("X1", "99VENDOR", "Obstetric exam"), template=False))


def test_vendor_nesting_is_read_by_concept_codes() -> None:
    """Dating two containers down, biometry four down in cm, fetus named by Subject ID after its measurements."""
    ds = ob_report_dataset(layout="vendor", lmp=LMP_DAY, edd=EDD_DAY,
                           fetuses=(Fetus("1", hc_mm=171.0, bpd_mm=47.0, units="cm", composite_ga_days=180.6),))
    report = parse_ob_report(ds)
    assert (report.lmp, report.edd) == (LMP_DAY, EDD_DAY)
    (fetus,) = report.fetuses
    # each measurement is written 0.98x, 1.02x and as the Derivation = Mean value: the mean one is taken
    assert fetus.fetus_id == "1" and fetus.hc_mm == pytest.approx(171.0) and fetus.bpd_mm == pytest.approx(47.0)
    assert fetus.ofd_mm is None
    assert report.ga_days_at_report == pytest.approx(180.6) and report.ga_kind == GaKind.COMPOSITE_US  # weeks -> days
    assert report.notes == ()


def test_several_values_without_a_mean_are_averaged() -> None:
    ds = sr_dataset([container(FETAL_BIOMETRY, num(HC, 170.0), num(HC, 172.0), num(BPD, 4.7, "cm"))])
    (fetus,) = parse_ob_report(ds).fetuses
    assert (fetus.hc_mm, fetus.bpd_mm) == (pytest.approx(171.0), pytest.approx(47.0))


def test_edd_only_report() -> None:
    report = parse_ob_report(ob_report_dataset(edd=EDD_DAY, fetuses=()))
    assert (report.edd, report.lmp, report.edd_from_lmp, report.ga_days_at_report) == (EDD_DAY, None, None, None)
    assert report.fetuses == () and report.number_of_fetuses == 1 and report.notes == ()


@pytest.mark.parametrize("layout", ["standard", "vendor"])
def test_two_fetuses_keep_their_own_values(layout: str) -> None:
    ds = ob_report_dataset(layout=layout, edd=EDD_DAY, fetuses=(Fetus("A", hc_mm=171.0, bpd_mm=47.0),
                                                               Fetus("B", hc_mm=158.0, bpd_mm=44.0)))
    report = parse_ob_report(ds)
    assert [(f.fetus_number, f.fetus_id) for f in report.fetuses] == [(1, "A"), (2, "B")]
    assert report.fetus("A").hc_mm == pytest.approx(171.0) and report.fetus("B").hc_mm == pytest.approx(158.0)
    assert report.fetus(2).bpd_mm == pytest.approx(44.0) and report.fetus("C") is None
    assert report.number_of_fetuses == 2 and report.declared_fetuses == 2


def test_twins_biometry_without_a_fetus_id_is_given_to_neither() -> None:
    ds = ob_report_dataset(fetuses=(Fetus("A", hc_mm=171.0), Fetus("B", hc_mm=158.0)),
                           extra_content=[container(FETAL_BIOMETRY, num(HC, 200.0))])
    report = parse_ob_report(ds)
    assert [f.hc_mm for f in report.fetuses] == [171.0, 158.0]
    assert any("without a Fetus ID" in n for n in report.notes)


def test_one_fetus_named_in_one_section_only_gets_its_unnamed_biometry() -> None:
    ds = sr_dataset([container(SUMMARY, text_item(FETUS_ID, "A"), date_item(EDD, EDD_DAY)),
                     container(FETAL_BIOMETRY, num(HC, 171.0))])
    assert parse_ob_report(ds).fetuses == (FetusBiometry(1, "A", hc_mm=171.0),)


def _not_a_number(item: Dataset) -> Dataset:
    """(0040,A30A) Numeric Value "abc " as a file would hold it (pydicom refuses to set "abc" as a DS)."""
    measured = item.MeasuredValueSequence[0]
    measured[0x0040A30A] = _raw(0x0040A30A, "DS", b"abc ")
    return item


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    """An element as read from a file, converted only when accessed."""
    return RawDataElement(Tag(tag), vr, len(value), value, 0, True, True)


def test_items_that_cannot_be_used_are_noted_and_the_rest_kept() -> None:
    ds = sr_dataset([
        container(SUMMARY, text_item(LMP, "2025-09-01", "CONTAINS"),  # wrong value type (TEXT, not DATE)
                  date_item(EDD, "20261340")),  # not a date
        container(FETAL_BIOMETRY, num(HC, 171.0, unit=None),  # no units
                  num(BPD, 47.0, unit="[in_i]"),  # not mm/cm/m
                  _not_a_number(num(("11851-3", "LN", "Occipital-Frontal Diameter"), 61.0)),
                  num(HC, None), num(BPD, 46.0)),  # no value; then a usable BPD
    ])
    report = parse_ob_report(ds)
    assert (report.lmp, report.edd) == (None, None)
    assert report.fetuses == (FetusBiometry(1, None, hc_mm=None, bpd_mm=46.0),)
    text = " | ".join(report.notes)
    for expected in ("LMP (11955-2): value type TEXT, expected DATE", "'20261340' is not a date",
                     "HC (11984-2): no units", "units ([in_i], UCUM) are not a length", "'abc' is not a number",
                     "HC (11984-2): no value"):
        assert expected in text
    assert len(report.notes) == 6


def test_nonsense_dates_and_values_are_left_out() -> None:
    ds = sr_dataset([container(SUMMARY, date_item(LMP, dt.date(2026, 5, 1)),  # after the study
                               date_item(EDD, dt.date(2028, 1, 1))),  # GA far below 0
                     container(FETAL_BIOMETRY, num(HC, 1710.0))])  # 1.7 m
    report = parse_ob_report(ds)
    assert (report.lmp, report.edd, report.fetuses) == (None, None, ())
    assert len(report.notes) == 3
    assert {n.split(" ")[0] for n in report.notes} == {"LMP", "EDD", "HC"} and "GA of -60 days" in str(report.notes)


def test_conflicting_dates_are_not_chosen_between() -> None:
    ds = sr_dataset([container(SUMMARY, date_item(EDD, EDD_DAY), date_item(EDD, EDD_DAY + dt.timedelta(days=9)))])
    report = parse_ob_report(ds)
    assert report.edd is None and "different dates" in report.notes[0]


@pytest.mark.parametrize("breakage, uids", [
    ("no_sop_uid", ("", "1.2.3")), ("no_study_uid", ("1.2.3.9", "")), ("no_content", ("1.2.3.9", "1.2.3")),
    ("too_deep", ("1.2.3.9", "1.2.3")),
])
def test_malformed_report_raises_a_clear_reason_with_what_it_could_read(breakage: str,
                                                                        uids: tuple[str, str]) -> None:
    ds = ob_report_dataset(edd=EDD_DAY, study_uid="1.2.3", sop_uid="1.2.3.9")
    if breakage == "no_sop_uid":
        del ds.SOPInstanceUID
    elif breakage == "no_study_uid":
        ds.StudyInstanceUID = ""
    elif breakage == "no_content":
        del ds.ContentSequence
    else:
        node = container(SUMMARY)
        ds.ContentSequence = [node]
        for _ in range(80):
            child = container(SUMMARY)
            node.ContentSequence = [child]
            node = child
    with pytest.raises(MalformedReportError) as caught:
        parse_ob_report(ds)
    err = caught.value
    assert isinstance(err, DicomError) and err.reason == "malformed_report"
    assert (err.sop_instance_uid, err.study_instance_uid) == uids
    again = pickle.loads(pickle.dumps(err))  # Celery ships it between processes
    assert (str(again), again.reason, again.sop_instance_uid, again.study_instance_uid) == (
        str(err), "malformed_report", *uids)


def test_a_content_sequence_with_the_wrong_vr_is_malformed_not_a_crash() -> None:
    ds = ob_report_dataset(edd=EDD_DAY)
    broken = container(SUMMARY)
    broken[0x0040A730] = _raw(0x0040A730, "LO", b"abcd")  # (0040,A730) Content Sequence written as a string
    ds.ContentSequence.append(broken)
    with pytest.raises(MalformedReportError, match="cannot be walked"):
        parse_ob_report(ds)


def test_other_sr_is_not_recognised() -> None:
    ds = other_sr_dataset()
    assert not is_ob_report(ds)
    with pytest.raises(UnsupportedImageError) as caught:
        parse_ob_report(ds)
    assert caught.value.reason == "not_ob_report"


def test_ultrasound_image_is_not_recognised(tmp_path: Path) -> None:
    path = write_us_image(tmp_path / "us.dcm", grey_image(), 0.2)
    assert not is_ob_report(read_header(path).dataset)
    with pytest.raises(UnsupportedImageError, match="not an OB-GYN ultrasound report"):
        read_ob_report(path)


def test_is_ob_report_never_raises_on_odd_headers() -> None:
    ds = Dataset()
    assert not is_ob_report(ds)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    ds.ConceptNameCodeSequence = [Dataset()]  # an item without a code
    assert not is_ob_report(ds)


def test_not_dicom_is_a_dicom_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(DicomError) as caught:
        read_ob_report(path)
    assert caught.value.reason == "not_dicom"


def test_report_values_validate_on_creation() -> None:
    with pytest.raises(ValueError, match="SOP Instance UID"):
        ObReport(sop_instance_uid="", study_instance_uid="1.2")
    with pytest.raises(ValueError, match="hc_mm"):
        FetusBiometry(1, hc_mm=-3.0)
    with pytest.raises(ValueError, match="go together"):
        ObReport(sop_instance_uid="1", study_instance_uid="2", ga_days_at_report=100.0)


def test_the_helper_writes_a_tree_that_parses_the_same_after_a_copy() -> None:
    """The helper's datasets are plain pydicom: a deep copy (as tests that break them make) reads the same."""
    ds = ob_report_dataset(lmp=LMP_DAY, title=OB_GYN_REPORT)
    assert parse_ob_report(copy.deepcopy(ds)) == parse_ob_report(ds)


def test_a_report_written_by_highdicom_is_read() -> None:
    """Interoperability: highdicom's ComprehensiveSR with a TID 5000 tree (template id, DATE, TEXT, NUM in cm)."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    from dicom_io.writer import build_us_dataset

    image = build_us_dataset(grey_image(), 0.2)  # the evidence: the study's image
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                    "StudyTime", "PatientName", "PatientID"):
        setattr(image, keyword, image.get(keyword) or "")
    image.StudyDate = STUDY_DATE.strftime("%Y%m%d")
    concept = hd.sr.CodedConcept
    summary = hd.sr.ContainerContentItem(name=concept(*SUMMARY), relationship_type="CONTAINS")
    summary.ContentSequence = [hd.sr.DateContentItem(name=concept(*EDD), value=EDD_DAY, relationship_type="CONTAINS")]
    biometry = hd.sr.ContainerContentItem(name=concept(*FETAL_BIOMETRY), relationship_type="CONTAINS")
    biometry.ContentSequence = [
        hd.sr.TextContentItem(name=concept(*FETUS_ID), value="A", relationship_type="HAS OBS CONTEXT"),
        hd.sr.NumContentItem(name=concept(*HC), value=17.1, unit=concept("cm", "UCUM", "cm"),
                             relationship_type="CONTAINS")]
    root = hd.sr.ContainerContentItem(name=concept(*OB_GYN_REPORT), template_id="5000")
    root.ContentSequence = [summary, biometry]
    sr = hd.sr.ComprehensiveSR(evidence=[image], content=root, series_instance_uid=generate_uid(), series_number=1,
                               sop_instance_uid=generate_uid(), instance_number=1, manufacturer="Acme")
    assert is_ob_report(sr)
    report = parse_ob_report(sr)
    assert (report.study_instance_uid, report.edd, report.notes) == (image.StudyInstanceUID, EDD_DAY, ())
    (fetus,) = report.fetuses
    assert (fetus.fetus_id, fetus.hc_mm, fetus.bpd_mm) == ("A", pytest.approx(171.0), None)
