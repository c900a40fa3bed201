"""The C-STORE listener: ultrasound spooled atomically, job recorded, queued on 'live'; statuses per case."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, UltrasoundImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from db import Job, Measurement, session_scope
from tests.worker.ingest_support import free_port, ingest_settings, make_settings, queued, tiny_us  # noqa: F401
from worker.ingest import listener
from worker.ingest.listener import handlers, make_ae, start_listener
from worker.core.settings import Settings


@pytest.fixture()
def running(ingest_settings: Settings) -> Iterator[tuple[Settings, int]]:
    """The listener in this process on a free localhost port."""
    port = free_port()
    server = start_listener(ingest_settings, host="127.0.0.1", port=port)
    try:
        yield ingest_settings, port
    finally:
        server.shutdown()


def _send(port: int, *paths: Path, contexts: tuple = ((UltrasoundImageStorage, ExplicitVRLittleEndian),)) -> list[int]:
    """C-STORE each file on one association as SCANNER -> FETALHC; returns the status of each."""
    ae = AE(ae_title="SCANNER")
    for abstract, syntax in contexts:
        ae.add_requested_context(abstract, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="FETALHC")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in paths]
    finally:
        assoc.release()


def _jobs(url: str) -> list[Job]:
    with session_scope(url) as s:
        return list(s.scalars(select(Job).order_by(Job.id)))


def test_echo_answers_success(running: tuple[Settings, int]) -> None:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running[1], ae_title="FETALHC")
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == 0x0000
    assoc.release()


def test_wrong_called_ae_title_is_rejected(running: tuple[Settings, int]) -> None:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running[1], ae_title="NOTUS")
    assert assoc.is_rejected


def test_store_spools_records_and_queues_on_live(running: tuple[Settings, int], redis_url: str,
                                                 tmp_path: Path) -> None:
    settings, port = running
    src = tiny_us(tmp_path / "in" / "a.dcm", dt.date(2026, 3, 1), patient_id="P-9")
    uid = str(pydicom.dcmread(src).SOPInstanceUID)

    assert _send(port, src) == [0x0000]

    spooled = settings.spool_dir / f"{uid}.dcm"
    assert spooled.is_file()
    assert not [p for p in settings.spool_dir.iterdir() if p.name.endswith(".tmp")]  # no temp left over
    back = pydicom.dcmread(spooled)
    assert back.SOPInstanceUID == uid and back.PixelData == pydicom.dcmread(src).PixelData
    [job] = _jobs(settings.database_url)
    assert (job.source, job.queue, job.status, job.sop_instance_uid) == ("live", "live", "queued", uid)
    assert queued(redis_url, "live") == [{"task": "fetalhc.measure", "job_id": job.id, "path": str(spooled)}]
    assert queued(redis_url, "backfill") == []


def test_jpeg_is_accepted_and_kept_compressed(running: tuple[Settings, int]) -> None:
    settings, port = running
    src = Path(get_testdata_file("JPGLosslessP14SV1_1s_1f_8b.dcm", download=False))
    uid = str(pydicom.dcmread(src, stop_before_pixels=True).SOPInstanceUID)

    assert _send(port, src, contexts=((UltrasoundImageStorage, JPEGLosslessSV1),)) == [0x0000]

    stored = pydicom.dcmread(settings.spool_dir / f"{uid}.dcm")
    assert stored.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    assert stored.PixelData == pydicom.dcmread(src).PixelData  # the sender's bytes, not re-encoded


@pytest.mark.parametrize("mode", ["ignore", "refuse"])
def test_other_sop_classes_are_ignored_or_refused(mode: str, monkeypatch: pytest.MonkeyPatch, redis_url: str,
                                                  tmp_path: Path) -> None:
    settings = make_settings(monkeypatch, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path,
                             ACCEPT_OTHER=mode)
    port = free_port()
    server = start_listener(settings, host="127.0.0.1", port=port)
    try:
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(UltrasoundImageStorage)  # so the association itself is accepted
        assoc = ae.associate("127.0.0.1", port, ae_title="FETALHC")
        assert assoc.is_established
        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
        if mode == "ignore":
            assert int(assoc.send_c_store(ct).Status) == 0x0000  # accepted...
        else:
            # refused politely at negotiation: the CT presentation context is not accepted
            assert not any(cx.abstract_syntax == CTImageStorage for cx in assoc.accepted_contexts)
            with pytest.raises(ValueError):
                assoc.send_c_store(ct)
        assoc.release()
    finally:
        server.shutdown()
    assert _jobs(settings.database_url) == []  # ...and dropped: no job, no file, nothing queued
    assert not any(settings.spool_dir.glob("*.dcm"))
    assert queued(redis_url, "live") == []


def test_database_down_answers_out_of_resources(ingest_settings: Settings) -> None:
    settings = ingest_settings.replace(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none"
                                   "?connect_timeout=1")
    port = free_port()
    ae = make_ae(settings)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers(settings))
    try:
        src = tiny_us(settings.spool_dir.parent / "in.dcm")
        assert _send(port, src) == [0xA700]  # the modality keeps the scan and retries later
    finally:
        server.shutdown()


def test_broker_down_still_answers_success_job_left_received(running: tuple[Settings, int], redis_url: str,
                                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings, port = running

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr("worker.queue.enqueue.send", unreachable)
    assert _send(port, tiny_us(tmp_path / "b.dcm")) == [0x0000]  # durable: file and job
    [job] = _jobs(settings.database_url)
    assert job.status == "received"  # the sweeper will queue it
    assert queued(redis_url, "live") == []


def test_invalid_uid_is_refused_without_writing(ingest_settings: Settings) -> None:
    class Request:
        AffectedSOPClassUID = UltrasoundImageStorage
        AffectedSOPInstanceUID = "../../etc/passwd"

    event = evt.Event(None, evt.EVT_C_STORE, {"request": Request()})  # type: ignore[arg-type]
    assert listener.handle_store(event, ingest_settings) == 0xA900
    assert not ingest_settings.spool_dir.exists() or not any(ingest_settings.spool_dir.iterdir())


def test_same_scan_twice_one_file_one_row_measured_end_to_end(monkeypatch: pytest.MonkeyPatch, pg_url: str,
                                                              redis_url: str, tmp_path: Path) -> None:
    from dicom_io.phantom import make_phantom
    from dicom_io.writer import ScanIdentity, write_us_image
    from worker.queue.tasks import measure

    settings = make_settings(monkeypatch, redis_url, pg_url, tmp_path)
    phantom = make_phantom(hc_mm=200.0, spacing_mm=0.15, seed=4)
    src = write_us_image(tmp_path / "scan.dcm", phantom.image, phantom.spacing_mm,
                         identity=ScanIdentity(study_date=dt.date(2026, 4, 2)))
    port = free_port()
    server = start_listener(settings, host="127.0.0.1", port=port)
    try:
        assert _send(port, src, src) == [0x0000, 0x0000]
    finally:
        server.shutdown()

    jobs = _jobs(pg_url)
    assert len(jobs) == 2 and {j.path for j in jobs} == {str(settings.spool_dir / f"{jobs[0].sop_instance_uid}.dcm")}
    assert len(list(settings.spool_dir.iterdir())) == 1  # one file per instance
    messages = queued(redis_url, "live")
    assert [m["job_id"] for m in messages] == [j.id for j in jobs]
    for m in messages:  # what a worker would do with each message
        result = measure.run(m["job_id"], m["path"], None)
        assert result["status"] in ("measured", "needs_review")
    with session_scope(pg_url) as s:
        [row] = s.scalars(select(Measurement)).all()  # one result row for the scan sent twice
        assert row.hc_mm == pytest.approx(phantom.hc_mm, rel=0.08)
        assert row.study_date == dt.date(2026, 4, 2)
