"""``worker.measure.sr_export``: SR files written, sent to a real DICOM storage SCP on localhost, kept when sending fails."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from db import Measurement, session_scope
from db.rows import MeasurementRow
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.worker.ingest_support import free_port
from worker.core.settings import Settings, get_settings
from worker.measure.sr_export import export_reports

VERSION = "ef" * 32
PATIENT_ID, PATIENT_NAME = "PID-SECRET-42", "Secret^Patient"


class StorageScp:
    """A pynetdicom storage SCP on a free localhost port that keeps what it receives (``status`` to answer)."""

    def __init__(self, status: int = 0x0000) -> None:
        self.port = free_port()
        self.status = status
        self.received: list[Dataset] = []
        self.lock = threading.Lock()
        ae = AE(ae_title="TESTPACS")
        ae.add_supported_context(ComprehensiveSRStorage)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: evt.Event) -> int:
        with self.lock:
            self.received.append(event.dataset)
        return self.status

    @property
    def url(self) -> str:
        return f"dimse://TESTPACS@127.0.0.1:{self.port}"


@pytest.fixture()
def scp() -> Iterator[StorageScp]:
    server = StorageScp()
    yield server
    server.server.shutdown()


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(f"FETALHC_{key}", value)
    get_settings.cache_clear()
    return get_settings()


def _row(tmp_path: Path, name: str = "us.dcm", status: str = "measured") -> MeasurementRow:
    """A pipeline row of a generated scan (without running the model)."""
    phantom = make_phantom(shape=(240, 320), hc_mm=120.0, seed=1)
    path = write_us_image(tmp_path / name, phantom.image, 0.15, identity=ScanIdentity(
        patient_id=PATIENT_ID, patient_name=PATIENT_NAME, study_date=dt.date(2026, 2, 1)))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    cx, cy, a, b, angle = phantom.outer
    return MeasurementRow.of(**{"path": str(path), "job_id": 7, "sop_instance_uid": ds.SOPInstanceUID, "frame": 1,
            "study_instance_uid": ds.StudyInstanceUID, "status": status, "hc_mm": 120.4, "bpd_mm": 2 * b * 0.15,
            "ofd_mm": 2 * a * 0.15, "quality": 0.9, "flags": None, "model_name": "unet", "model_version": VERSION,
            "center_x_mm": cx * 0.15, "center_y_mm": cy * 0.15, "semi_axis_a_mm": a * 0.15,
            "semi_axis_b_mm": b * 0.15, "angle_rad": angle, "spacing_mm_x": 0.15, "spacing_mm_y": 0.15,
            "spacing_source": "us_region", "region_x0": 0, "region_y0": 0, "region_x1": 319, "region_y1": 239,
            "ga_estimate_days": 110.0, "ga_formula": "intergrowth_2016"})


def _items(ds: Dataset) -> Iterator[Dataset]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _sr_count(outcome: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("fetalhc_sr_reports_total", {"outcome": outcome}) or 0.0


def test_off_by_default_writes_nothing(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _settings(fetalhc_env)

    summary = export_reports(settings, [_row(tmp_path)])

    assert settings.sr_dir is None and settings.sr_destination is None
    assert (summary.sent, summary.failed) == ([], {})
    assert not (settings.spool_dir / "sr").exists()


def test_sr_dir_keeps_one_file_per_reportable_row(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = _settings(fetalhc_env, SR_DIR=str(tmp_path / "reports"))
    rows = [_row(tmp_path, "a.dcm"), _row(tmp_path, "b.dcm", status="needs_review"),
            {**_row(tmp_path, "c.dcm"), "status": "failed", "hc_mm": None}]

    export_reports(settings, rows)
    export_reports(settings, rows[:1])  # the same row again: the same file, replaced

    files = sorted((tmp_path / "reports").glob("*.dcm"))
    assert len(files) == 2
    refs = {pydicom.dcmread(f).CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID for f in files}
    assert refs == {rows[0]["sop_instance_uid"], rows[1]["sop_instance_uid"]}


def test_destination_receives_the_sr_and_the_outbox_empties(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                            scp: StorageScp) -> None:
    settings = _settings(fetalhc_env, SR_DESTINATION=scp.url)
    row = _row(tmp_path)
    sent_before = _sr_count("sent")

    summary = export_reports(settings, [row])

    assert len(summary.sent) == 1 and summary.failed == {}
    (received,) = scp.received
    assert received.StudyInstanceUID == row["study_instance_uid"]
    assert received.PatientID == PATIENT_ID
    assert list((settings.spool_dir / "sr").glob("*.dcm")) == []  # no SR_DIR: nothing kept once stored
    assert _sr_count("sent") == sent_before + 1


def test_a_failed_send_keeps_the_file_logs_a_reason_without_patient_data(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(fetalhc_env, SR_DESTINATION=f"dimse://NOBODY@127.0.0.1:{free_port()}")
    failed_before = _sr_count("send_failed")

    with caplog.at_level(logging.INFO):
        summary = export_reports(settings, [_row(tmp_path)])

    kept = list((settings.spool_dir / "sr").glob("*.dcm"))
    assert len(kept) == 1 and list(summary.failed) == kept
    assert pydicom.dcmread(kept[0]).Modality == "SR"
    text = caplog.text
    assert "SR for job 7 not sent" in text and "fetalhc sr send" in text
    for secret in (PATIENT_ID, "Secret", str(tmp_path / "us.dcm")):
        assert secret not in text
    assert _sr_count("send_failed") == failed_before + 1


def test_a_refusing_destination_is_a_failure_with_its_status(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path
                                                             ) -> None:
    refusing = StorageScp(status=0xA700)  # out of resources
    try:
        settings = _settings(fetalhc_env, SR_DESTINATION=refusing.url, SR_DIR=str(tmp_path / "reports"))
        summary = export_reports(settings, [_row(tmp_path)])
    finally:
        refusing.server.shutdown()

    assert list(summary.failed.values()) == ["C-STORE status 0xA700"]
    assert len(list((tmp_path / "reports").glob("*.dcm"))) == 1


def test_a_vanished_source_never_raises(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(fetalhc_env, SR_DIR=str(tmp_path / "reports"))
    row = _row(tmp_path)
    Path(row["path"]).unlink()

    export_reports(settings, [row])

    assert "SR for job 7 not written" in caplog.text
    assert not list((tmp_path / "reports").glob("*.dcm"))


def test_cli_sr_send_resends_a_folder(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, scp: StorageScp,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    _settings(fetalhc_env, SR_DIR=str(tmp_path / "reports"))
    export_reports(get_settings(), [_row(tmp_path, "a.dcm"), _row(tmp_path, "b.dcm")])

    code = main(["sr", "send", str(tmp_path / "reports"), "--destination", scp.url, "--remove-sent", "--json"])

    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"sent": 2, "failed": 0, "reasons": []}
    assert len(scp.received) == 2 and not list((tmp_path / "reports").glob("*.dcm"))


def test_a_bad_destination_is_refused_at_startup(fetalhc_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="dimse://AETITLE@host:port"):
        _settings(fetalhc_env, SR_DESTINATION="orthanc:4242")


def test_process_writes_an_sr_whose_ellipse_is_on_the_head(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """End to end through the model: the SCOORD lands on the phantom's skull in full-frame pixels."""
    from worker.cli import main

    _settings(fetalhc_env, SR_DIR=str(tmp_path / "reports"))
    phantom = make_phantom(shape=(360, 480), hc_mm=170.0, spacing_mm=0.15, angle=0.5, seed=3)
    frame = np.zeros((400, 560), np.uint8)
    frame[30:390, 50:530] = phantom.image  # the region starts at (50, 30)
    path = write_us_image(tmp_path / "scan.dcm", frame, 0.15, identity=ScanIdentity(patient_id=PATIENT_ID),
                          region_bounds=(50, 30, 529, 389))

    assert main(["process", "--json", str(path)]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    (sr_path,) = (tmp_path / "reports").glob("*.dcm")
    sr = pydicom.dcmread(sr_path)

    with session_scope(get_settings().database_url) as s:
        stored = s.scalars(select(Measurement)).one()
        assert (stored.hc_mm, stored.sr_status) == (row["hc_mm"], "done")  # written: the sweep has nothing owed
    scoords = [i for i in _items(sr) if i.ValueType == "SCOORD"]
    assert len(scoords) == 1
    points = np.asarray(scoords[0].GraphicData, dtype=float).reshape(4, 2)
    cx, cy, a, b, _ = phantom.outer
    truth_centre = np.array([50 + cx + 0.5, 30 + cy + 0.5])
    assert np.linalg.norm(points.mean(axis=0) - truth_centre) < 3.0  # px
    assert np.linalg.norm(points[1] - points[0]) / 2 == pytest.approx(a, rel=0.05)
    assert np.linalg.norm(points[3] - points[2]) / 2 == pytest.approx(b, rel=0.05)


# -- SRs owed (measurements.sr_status) and the sweep's export ----------------------------------------------

def _store_owed(settings: Settings, rows: list[MeasurementRow], ages_s: list[float]) -> None:
    """Store rows as the pipeline does before its export (``mark_owed``), last updated ``ages_s`` ago."""
    from sqlalchemy import update

    from db import upgrade, upsert_measurement
    from worker.measure.sr_export import mark_owed

    upgrade(settings.database_url)
    rows = mark_owed(rows)
    now = dt.datetime.now(dt.timezone.utc)
    with session_scope(settings.database_url) as s:
        for row, age in zip(rows, ages_s):
            upsert_measurement(s, row)
            s.execute(update(Measurement).where(Measurement.sop_instance_uid == row["sop_instance_uid"])
                      .values(updated_at=now - dt.timedelta(seconds=age)))


def _sr_statuses(settings: Settings) -> dict[str, str | None]:
    with session_scope(settings.database_url) as s:
        return {m.path: m.sr_status for m in s.scalars(select(Measurement))}


def test_only_measured_rows_of_a_file_owe_an_sr(tmp_path: Path) -> None:
    from worker.measure.sr_export import mark_owed

    rows = [_row(tmp_path, "a.dcm"), _row(tmp_path, "b.dcm", status="needs_review"),
            _row(tmp_path, "c.dcm", status="not_head"), _row(tmp_path, "d.dcm", status="failed"),
            _row(tmp_path, "e.dcm").replace(path=None)]
    rows = mark_owed(rows)
    assert [r["sr_status"] for r in rows] == ["pending", "pending", None, None, None]


def test_an_sr_owed_is_sent_once_the_destination_is_back(fetalhc_env: pytest.MonkeyPatch, tmp_path: Path,
                                                         scp: StorageScp) -> None:
    from worker.measure.sr_export import export_pending

    settings = _settings(fetalhc_env, SR_DESTINATION=f"dimse://NOBODY@127.0.0.1:{free_port()}")
    row = _row(tmp_path)
    _store_owed(settings, [row], [600])

    down = export_pending(settings, dt.timedelta(seconds=60))
    assert (down.done, len(down.retry)) == ([], 1)
    assert _sr_statuses(settings) == {row["path"]: "pending"}
    assert export_pending(settings, dt.timedelta(seconds=60)).retry == []  # just tried: not again this sweep

    settings = _settings(fetalhc_env, SR_DESTINATION=scp.url)  # the PACS is back
    summary = export_pending(settings, dt.timedelta(0))

    assert len(summary.done) == 1 and len(scp.received) == 1
    assert scp.received[0].CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID == row["sop_instance_uid"]
    assert _sr_statuses(settings) == {row["path"]: "done"}
    assert list((settings.spool_dir / "sr").glob("*.dcm")) == []  # sent: the outbox is empty again
    assert export_pending(settings, dt.timedelta(0)).done == []


def test_the_sweep_exports_a_bounded_batch_and_gives_up_on_a_vanished_source(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from worker.measure.sr_export import export_pending

    settings = _settings(fetalhc_env, SR_DIR=str(tmp_path / "reports"))
    rows = [_row(tmp_path, "a.dcm"), _row(tmp_path, "b.dcm"), _row(tmp_path, "c.dcm")]
    _store_owed(settings, rows, [900, 800, 700])
    Path(rows[1]["path"]).unlink()  # spool retention removed it

    first = export_pending(settings, dt.timedelta(seconds=60), limit=2)
    assert (len(first.done), len(first.unbuilt)) == (1, 1)
    assert _sr_statuses(settings) == {rows[0]["path"]: "done", rows[1]["path"]: "failed",
                                      rows[2]["path"]: "pending"}
    second = export_pending(settings, dt.timedelta(seconds=60), limit=2)
    assert (len(second.done), second.unbuilt) == (1, [])
    assert export_pending(settings, dt.timedelta(seconds=60), limit=2).done == []  # nothing owed any more
    refs = {pydicom.dcmread(f).CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0].ReferencedSOPInstanceUID for f in (tmp_path / "reports").glob("*.dcm")}
    assert refs == {rows[0]["sop_instance_uid"], rows[2]["sop_instance_uid"]}
    assert PATIENT_ID not in caplog.text


def test_an_unwritable_outbox_leaves_the_sr_owed_and_a_database_down_never_raises(
        fetalhc_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from worker.measure.sr_export import export_pending

    (tmp_path / "reports").write_text("a file where the folder should be")
    settings = _settings(fetalhc_env, SR_DIR=str(tmp_path / "reports"))
    row = _row(tmp_path)
    _store_owed(settings, [row], [600])

    summary = export_pending(settings, dt.timedelta(seconds=60))
    assert (summary.done, len(summary.retry), summary.unbuilt) == ([], 1, [])
    assert _sr_statuses(settings) == {row["path"]: "pending"}  # fixed by the operator, then a later sweep's

    down = _settings(fetalhc_env, DATABASE_URL=f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}",
                     SR_DIR=str(tmp_path / "elsewhere"))
    assert export_pending(down, dt.timedelta(seconds=60)).done == []
