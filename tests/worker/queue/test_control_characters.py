"""A NUL in Patient ID or Accession Number (issue 21, item 8): the scan is measured, the text cleaned and flagged.

A scanner sends a head image whose (0010,0020) Patient ID and (0008,0050) Accession Number hold a NUL and another
control character, through the listener (its Success is now kept) to the task on PostgreSQL (which refuses a NUL
in text): the job finishes measured, the row holds the cleaned values and the flag ``text_cleaned``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import UltrasoundImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from db import Job, Measurement, session_scope
from dicom_io.phantom import make_phantom
from dicom_io.reader import read_scan
from dicom_io.text import clean_text
from dicom_io.writer import ScanIdentity, write_us_image
from tests.worker.ingest_support import free_port, make_settings
from worker.ingest.listener import start_listener


def _sloppy(path: Path) -> Path:
    phantom = make_phantom(shape=(240, 320), hc_mm=170.0, spacing_mm=0.2, seed=4)
    write_us_image(path, phantom.image, phantom.spacing_mm, identity=ScanIdentity(study_date=dt.date(2026, 3, 2)))
    ds = pydicom.dcmread(path)
    ds["PatientID"].value = "PID\x0012\x07"
    ds["AccessionNumber"].value = "ACC\x00 7"
    ds.save_as(path)
    raw = path.read_bytes()
    assert b"PID\x0012\x07" in raw and b"ACC\x00 7" in raw  # written as the scanner sent it
    return path


def test_clean_text_removes_controls_and_says_so() -> None:
    assert clean_text("AB\x00CD\x00 ") == ("ABCD", True)
    assert clean_text("PADDED\x00\x00") == ("PADDED", False)  # trailing NUL padding is not a change
    assert clean_text("Line\tone\r\n") == ("Line\tone", False)
    assert clean_text(None) == ("", False)


def test_a_nul_in_patient_id_is_cleaned_flagged_and_the_scan_measured(
        monkeypatch: pytest.MonkeyPatch, pg_url: str, redis_url: str, tmp_path: Path) -> None:
    from worker.queue.tasks import measure

    settings = make_settings(monkeypatch, redis_url, pg_url, tmp_path, HEAD_PLANE_GATE="off")
    scan_file = _sloppy(tmp_path / "sloppy.dcm")
    scan = read_scan(scan_file)
    assert (scan.patient_id, scan.accession_number, scan.text_cleaned) == ("PID12", "ACC 7", True)
    port = free_port()
    server = start_listener(settings, host="127.0.0.1", port=port)
    try:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="FETALHC")
        assert assoc.is_established
        try:
            assert int(assoc.send_c_store(pydicom.dcmread(scan_file)).Status) == 0
        finally:
            assoc.release()
    finally:
        server.shutdown()
    with session_scope(pg_url) as s:
        [(job_id, path)] = s.execute(select(Job.id, Job.path)).all()
    result = measure.run(job_id, path, None)
    assert result["status"] in ("measured", "needs_review"), result
    with session_scope(pg_url) as s:
        [row] = s.scalars(select(Measurement)).all()
        assert (row.patient_id, row.accession_number) == ("PID12", "ACC 7")
        assert "text_cleaned" in (row.flags or "").split(",")
        assert row.hc_mm is not None
        assert s.get(Job, job_id).status in ("done", "needs_review")
