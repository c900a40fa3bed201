"""One intake rule for every way in (issue 21, item 3): someone else's data never replaces a result or a waiting file.

* ``fetalhc listen`` (its own process, dcmtk's storescu): an instance whose UIDs are those of a finished scan but
  whose data set is another patient's is kept beside the first copy and recorded as a conflict (both patients'
  IDs in the database, neither in the log), never measured; the same bytes again stay idempotent; with the first
  copy pruned from the spool, the stored row still tells who the instance belongs to.
* backfill's C-GET receiver, against a hostile PACS (pynetdicom on loopback): an instance not asked for (the UID of
  a scan still waiting for a worker) is refused and the waiting file untouched; the instance asked for, with
  another patient's data, is a conflict, not a measurement.
* backfill's C-MOVE destination listens on ``FETALHC_LISTEN_HOST``, rejects callers outside
  ``FETALHC_ALLOWED_CALLERS``, refuses what no retrieve asked for and a data set that is not the instance announced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    UltrasoundImageStorage,
)
from sqlalchemy import select, update

from db import Job, JobStatus, Measurement, session_scope, upgrade, upsert_measurement
from db.conflicts import list_conflicts
from tests.integration.test_hostile_listener import (  # noqa: F401 - dcmtk is a fixture
    chunked_send,
    dcmtk,
    listening,
    scu,
)
from tests.worker.ingest_support import free_port, ingest_settings, queued, tiny_us  # noqa: F401
from worker.backfill.dimse import NOT_ASKED_FOR, DimseSource
from worker.backfill.runner import run_backfill
from worker.core.settings import Settings
from worker.ingest.intake import accept_instance
from worker.queue.celery_app import LIVE_QUEUE

pytestmark = pytest.mark.integration

PATIENT_A, PATIENT_B = "PHI-MOTHER-A-31", "PHI-MOTHER-B-77"


def _other_patient(src: Path, out: Path, seed: int = 9) -> Path:
    """``src`` with the same UIDs but another patient's ID and other pixels."""
    ds = pydicom.dcmread(src)
    ds.PatientID = PATIENT_B
    ds.PixelData = bytes(reversed(ds.PixelData))
    ds.save_as(out, enforce_file_format=True)
    return out


def _finish(url: str, job_id: int, path: Path, uid: str, model_version: str = "v-current") -> None:
    """Record the job as measured, with its row (as a worker would)."""
    with session_scope(url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.DONE.value))
        upsert_measurement(s, {"sop_instance_uid": uid, "frame": 1, "model_version": model_version, "job_id": job_id,
                               "status": "measured", "hc_mm": 171.5, "patient_id": PATIENT_A, "path": str(path)})


def _rows(url: str) -> list[tuple[str | None, float | None, int | None]]:
    with session_scope(url) as s:
        return list(s.execute(select(Measurement.patient_id, Measurement.hc_mm, Measurement.job_id)).tuples())


def test_another_patients_copy_of_a_finished_scan_is_kept_beside_and_recorded(
        dcmtk: None, redis_url: str, tmp_path: Path) -> None:
    a = tiny_us(tmp_path / "a.dcm", seed=1, patient_id=PATIENT_A)
    uid = str(pydicom.dcmread(a).SOPInstanceUID)
    impostor = _other_patient(a, tmp_path / "b_as_a.dcm")
    with listening(tmp_path, redis_url) as listener:
        assert scu("storescu", listener.port, [a]).returncode == 0
        spooled = listener.spool / f"{uid}.dcm"
        first = spooled.read_bytes()
        [job] = listener.jobs()
        _finish(listener.url, job.id, spooled, uid)

        sent = scu("storescu", listener.port, [impostor])
        assert sent.returncode == 0 and "Store Failed" not in sent.stderr, sent.stderr  # acknowledged: kept
        assert spooled.read_bytes() == first  # the finished scan's file still holds A
        assert _rows(listener.url) == [(PATIENT_A, 171.5, job.id)]  # and its result is A's
        jobs = listener.jobs()
        conflict_job = jobs[-1]
        assert (conflict_job.status, conflict_job.reason) == ("failed", "conflict")
        beside = Path(conflict_job.path)
        assert beside != spooled and beside.name.startswith(f"{uid}.")
        assert pydicom.dcmread(beside).PatientID == PATIENT_B  # the new copy is kept, not lost
        with session_scope(listener.url) as s:
            [conflict] = list_conflicts(s)
        assert (conflict["reason"], conflict["patient_id_existing"], conflict["patient_id_received"]) == (
            "other_patient", PATIENT_A, PATIENT_B)
        assert (conflict["kept_path"], conflict["existing_path"], conflict["job_id"]) == (
            str(beside), str(spooled), conflict_job.id)
        assert [m["job_id"] for m in queued(redis_url, LIVE_QUEUE)] == [job.id]  # the impostor was never queued

        assert scu("storescu", listener.port, [a]).returncode == 0  # the same bytes again: idempotent
        assert listener.jobs()[-1].status == "queued" and spooled.read_bytes() == first

        spooled.unlink()  # spool retention pruned the finished scan's file: its row still says whose it is
        assert scu("storescu", listener.port, [impostor]).returncode == 0
        assert not spooled.exists()
        with session_scope(listener.url) as s:
            assert [c["reason"] for c in list_conflicts(s)] == ["other_patient"] * 2
        assert listener.jobs()[-1].reason == "conflict"
        assert _rows(listener.url) == [(PATIENT_A, 171.5, job.id)]
        log = listener.log()
        assert "conflict" in log and PATIENT_A not in log and PATIENT_B not in log


# -- a hostile PACS for C-FIND + C-GET ---------------------------------------------------------------------------

class _HostilePacs:
    """Answers C-FIND with one US instance (X); answers the C-GET of X with an instance not asked for (Y, the UID of
    a scan still waiting in our spool) and then X with another patient's data."""

    def __init__(self, study: str, series: str, x: Path, sends: list[Path]) -> None:
        self.study, self.series, self.x, self.sends = study, series, x, sends
        self.port = free_port()
        self.statuses: list[int] = []
        ae = AE(ae_title="PACS")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_supported_context(UltrasoundImageStorage, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_FIND, self._find), (evt.EVT_C_GET, self._get)])

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        level = str(event.identifier.QueryRetrieveLevel)
        ds = Dataset()
        ds.QueryRetrieveLevel = level
        ds.StudyInstanceUID = self.study
        if level == "STUDY":
            ds.StudyDate = "20250110"
        if level in ("SERIES", "IMAGE"):
            ds.SeriesInstanceUID, ds.Modality = self.series, "US"
        if level == "IMAGE":
            header = pydicom.dcmread(self.x, stop_before_pixels=True)
            ds.SOPInstanceUID, ds.SOPClassUID = header.SOPInstanceUID, header.SOPClassUID
        yield 0xFF00, ds

    def _get(self, event: Any) -> Iterator[Any]:
        yield len(self.sends)
        for path in self.sends:
            yield 0xFF00, pydicom.dcmread(path)


def test_cget_receiver_refuses_what_was_not_asked_for_and_keeps_a_conflict_aside(
        ingest_settings: Settings, tmp_path: Path, redis_url: str) -> None:
    upgrade(ingest_settings.database_url)
    study, series = generate_uid(), generate_uid()
    x = tiny_us(tmp_path / "x.dcm", dt.date(2025, 1, 10), seed=1, patient_id=PATIENT_A, study_uid=study,
                series_uid=series)
    y = tiny_us(tmp_path / "y.dcm", dt.date(2025, 1, 10), seed=2, patient_id=PATIENT_A)
    x_uid, y_uid = (str(pydicom.dcmread(p).SOPInstanceUID) for p in (x, y))
    # X arrived live and was measured by an older model (so backfill fetches it again); Y waits for a worker.
    live_x = accept_instance(ingest_settings, x_uid, x, "live", LIVE_QUEUE)
    _finish(ingest_settings.database_url, live_x.job_id, live_x.path, x_uid, model_version="an-older-model")
    live_y = accept_instance(ingest_settings, y_uid, y, "live", LIVE_QUEUE)
    waiting = live_y.path.read_bytes()
    pacs = _HostilePacs(study, series, x, [_other_patient(y, tmp_path / "y_b.dcm"),
                                           _other_patient(x, tmp_path / "x_b.dcm")])
    try:
        source = DimseSource("127.0.0.1", pacs.port, "PACS", "FETALHC", settings=ingest_settings)
        summary = run_backfill(ingest_settings, source, progress=False)
    finally:
        pacs.server.shutdown()
    assert (summary.found, summary.queued, summary.failed) == (1, 0, 1), summary.line()
    assert summary.failures == {"conflict": 1}
    assert live_y.path.read_bytes() == waiting  # the waiting scan's file was never touched
    assert pydicom.dcmread(live_x.path).PatientID == PATIENT_A
    with session_scope(ingest_settings.database_url) as s:
        [conflict] = list_conflicts(s)
        backfill_jobs = list(s.scalars(select(Job).where(Job.source == "backfill")))
    assert (conflict["sop_instance_uid"], conflict["reason"], conflict["patient_id_received"]) == (
        x_uid, "other_patient", PATIENT_B)
    assert [(j.status, j.reason) for j in backfill_jobs] == [("failed", "conflict")]
    assert queued(redis_url, "backfill") == []
    assert not list((ingest_settings.spool_dir / ".incoming").glob("*.dcm"))  # staged files taken in or removed


def _store_as(port: int, path: Path, calling: str, called: str = "FETALHC_BF") -> int | None:
    ae = AE(ae_title=calling)
    ae.add_requested_context(UltrasoundImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None  # rejected
    try:
        with chunked_send():  # the file as it is: its file meta names the instance announced
            return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def test_the_cmove_destination_listens_where_the_listener_does_for_allowed_callers_only(
        ingest_settings: Settings, tmp_path: Path) -> None:
    settings = ingest_settings.replace(listen_host="127.0.0.1", allowed_callers="PACS,127.0.0.0/8")
    upgrade(settings.database_url)
    y = tiny_us(tmp_path / "y.dcm", seed=2, patient_id=PATIENT_A)
    y_uid = str(pydicom.dcmread(y).SOPInstanceUID)
    waiting = accept_instance(settings, y_uid, y, "live", LIVE_QUEUE)
    source = DimseSource("127.0.0.1", 1, "PACS", "FETALHC", retrieve="move", move_ae="FETALHC_BF",
                         move_port=free_port(), settings=settings)
    source._start_move_scp()
    try:
        assert source._scp is not None and source._scp.server_address[0] == "127.0.0.1"
        impostor = _other_patient(y, tmp_path / "y_b.dcm")
        assert _store_as(source.move_port or 0, impostor, "INTRUDER") is None  # not an allowed caller
        assert _store_as(source.move_port or 0, impostor, "PACS") == NOT_ASKED_FOR  # no retrieve asked for it
        assert waiting.path.read_bytes() == y.read_bytes()
        source.arrivals.expect(y_uid)
        mislabelled = pydicom.dcmread(tiny_us(tmp_path / "z.dcm", seed=3))
        mislabelled.file_meta.MediaStorageSOPInstanceUID = y_uid  # announced as Y, the data set is another
        mislabelled.save_as(tmp_path / "z_as_y.dcm", enforce_file_format=False)
        assert _store_as(source.move_port or 0, tmp_path / "z_as_y.dcm", "PACS") == 0xC001
        assert _store_as(source.move_port or 0, impostor, "PACS") == 0  # asked for: staged for the intake rule
        staged = source.arrivals.take(y_uid)
        assert staged is not None and staged.parent.name == ".incoming"
        assert waiting.path.read_bytes() == y.read_bytes()
    finally:
        source.close()
