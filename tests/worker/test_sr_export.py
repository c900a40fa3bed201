"""``worker.sr_export``: SR files written, sent to a real DICOM storage SCP on localhost, kept when sending fails."""

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
from dicom_io.phantom import make_phantom
from dicom_io.writer import ScanIdentity, write_us_image
from tests.worker.ingest_support import free_port
from worker.settings import Settings, get_settings
from worker.sr_export import export_reports

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


def _row(tmp_path: Path, name: str = "us.dcm", status: str = "measured") -> dict[str, Any]:
    """A pipeline row of a generated scan (without running the model)."""
    phantom = make_phantom(shape=(240, 320), hc_mm=120.0, seed=1)
    path = write_us_image(tmp_path / name, phantom.image, 0.15, identity=ScanIdentity(
        patient_id=PATIENT_ID, patient_name=PATIENT_NAME, study_date=dt.date(2026, 2, 1)))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    cx, cy, a, b, angle = phantom.outer
    return {"path": str(path), "job_id": 7, "sop_instance_uid": ds.SOPInstanceUID, "frame": 1,
            "study_instance_uid": ds.StudyInstanceUID, "status": status, "hc_mm": 120.4, "bpd_mm": 2 * b * 0.15,
            "ofd_mm": 2 * a * 0.15, "quality": 0.9, "flags": None, "model_name": "unet", "model_version": VERSION,
            "center_x_mm": cx * 0.15, "center_y_mm": cy * 0.15, "semi_axis_a_mm": a * 0.15,
            "semi_axis_b_mm": b * 0.15, "angle_rad": angle, "spacing_mm_x": 0.15, "spacing_mm_y": 0.15,
            "spacing_source": "us_region", "region_x0": 0, "region_y0": 0, "region_x1": 319, "region_y1": 239,
            "ga_estimate_days": 110.0, "ga_formula": "intergrowth_2016"}


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
        assert s.scalars(select(Measurement)).one().hc_mm == row["hc_mm"]
    scoords = [i for i in _items(sr) if i.ValueType == "SCOORD"]
    assert len(scoords) == 1
    points = np.asarray(scoords[0].GraphicData, dtype=float).reshape(4, 2)
    cx, cy, a, b, _ = phantom.outer
    truth_centre = np.array([50 + cx + 0.5, 30 + cy + 0.5])
    assert np.linalg.norm(points.mean(axis=0) - truth_centre) < 3.0  # px
    assert np.linalg.norm(points[1] - points[0]) / 2 == pytest.approx(a, rel=0.05)
    assert np.linalg.norm(points[3] - points[2]) / 2 == pytest.approx(b, rel=0.05)
