"""``fetalhc listen`` against dcmtk's echoscu/storescu as the scanner: US (also JPEG) in, others per setting."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1
from sqlalchemy import select

from db import Job, session_scope
from tests.conftest import require
from tests.worker.ingest_support import free_port, make_settings, queued, tiny_us
from worker.ingest.listener import start_listener

pytestmark = pytest.mark.integration

JPEG_LOSSLESS = "JPGLosslessP14SV1_1s_1f_8b.dcm"
JPEG_BASELINE = "color3d_jpeg_baseline.dcm"  # US multi-frame, 120 frames, what scanners send


@pytest.fixture(scope="module")
def dcmtk() -> None:
    require(shutil.which("storescu") is not None and shutil.which("echoscu") is not None,
            "dcmtk's storescu and echoscu (Debian package dcmtk)")


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the listener exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def scu(tool: str, port: int, files: list[Path] = (), options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run echoscu/storescu as SCANNER -> FETALHC@127.0.0.1:port."""
    argv = [tool, "-aet", "SCANNER", "-aec", "FETALHC", *options, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def cli_listener(dcmtk: None, pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[int, Path, str]]:
    """``fetalhc listen`` as its own process on PostgreSQL and Redis; yields (port, spool, database URL)."""
    port = free_port()
    spool = tmp_path / "spool"
    env = dict(os.environ, FETALHC_DATABASE_URL=pg_url, FETALHC_BROKER_URL=redis_url,
               FETALHC_SPOOL_DIR=str(spool), FETALHC_ACCEPT_OTHER="ignore", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "listen.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "-v", "listen", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_port(port, proc)
        yield port, spool, pg_url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def test_storescu_us_and_jpeg_accepted_ct_ignored_resend_one_file(cli_listener: tuple[int, Path, str],
                                                                   redis_url: str, tmp_path: Path) -> None:
    port, spool, url = cli_listener
    us = tiny_us(tmp_path / "scans" / "us.dcm", dt.date(2026, 2, 3))
    lossless = Path(get_testdata_file(JPEG_LOSSLESS, download=False))
    baseline = Path(get_testdata_file(JPEG_BASELINE, download=False))
    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    uid = {p: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (us, lossless, baseline)}

    echo = scu("echoscu", port)
    assert echo.returncode == 0, echo.stderr
    # storescu proposes only uncompressed syntaxes unless told; a scanner set to JPEG proposes JPEG.
    for files, options in (([us], ()), ([lossless], ("-xs",)), ([baseline], ("-xy",)), ([ct], ())):
        sent = scu("storescu", port, files, options)
        assert sent.returncode == 0 and "Store Failed" not in sent.stderr, sent.stdout + sent.stderr
    again = scu("storescu", port, [us])  # the same scan sent twice
    assert again.returncode == 0, again.stderr

    with session_scope(url) as s:
        jobs = list(s.scalars(select(Job).order_by(Job.id)))
    assert [j.sop_instance_uid for j in jobs] == [uid[us], uid[lossless], uid[baseline], uid[us]]  # a job per arrival
    assert {(j.source, j.queue, j.status) for j in jobs} == {("live", "live", "queued")}
    assert sorted(p.name for p in spool.iterdir()) == sorted(f"{u}.dcm" for u in uid.values())  # one file each
    assert pydicom.dcmread(spool / f"{uid[lossless]}.dcm").file_meta.TransferSyntaxUID == JPEGLosslessSV1
    assert pydicom.dcmread(spool / f"{uid[baseline]}.dcm", stop_before_pixels=True
                           ).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert [m["job_id"] for m in queued(redis_url, "live")] == [j.id for j in jobs]


def test_storescu_ct_refused_when_configured(dcmtk: None, monkeypatch: pytest.MonkeyPatch, redis_url: str,
                                             tmp_path: Path) -> None:
    settings = make_settings(monkeypatch, redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path,
                             ACCEPT_OTHER="refuse")
    port = free_port()
    server = start_listener(settings, host="127.0.0.1", port=port)
    try:
        ct = Path(get_testdata_file("CT_small.dcm", download=False))
        us = tiny_us(tmp_path / "us.dcm")
        result = scu("storescu", port, [ct, us], ("--no-halt",))
    finally:
        server.shutdown()
    output = result.stdout + result.stderr
    assert "No presentation context for: (CT)" in output, output  # refused at negotiation, reported
    with session_scope(settings.database_url) as s:
        jobs = list(s.scalars(select(Job)))
    assert [j.sop_instance_uid for j in jobs] == [str(pydicom.dcmread(us).SOPInstanceUID)]  # the US still arrives
