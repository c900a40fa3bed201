"""``fetalhc listen`` as its own process against hostile peers: real sockets, real files, dcmtk and pynetdicom.

A C-STORE whose data set is another instance than its request names; silent TCP sockets that hold
association slots; callers outside ``FETALHC_ALLOWED_CALLERS``; an instance over ``FETALHC_MAX_INSTANCE_MB``;
a 100 MB instance received without holding it in memory (the listener's peak RSS, VmHWM, is read).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, UltrasoundImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from db import Job, session_scope
from dicom_io.writer import write_us_image
from tests.conftest import require
from tests.services import wait_for
from tests.worker.ingest_support import free_port, tiny_us

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PATIENT_B = "PHI-OTHER-PATIENT-77"


@dataclass
class Listener:
    port: int
    proc: subprocess.Popen[bytes]
    spool: Path
    tmp: Path  # the listener's TMPDIR: where pynetdicom writes instances as they arrive
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_rss_mb(self) -> float:
        """The listener process's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def jobs(self) -> list[Job]:
        with session_scope(self.url) as s:
            return list(s.scalars(select(Job).order_by(Job.id)))


@pytest.fixture()
def dcmtk() -> None:
    require(shutil.which("storescu") is not None and shutil.which("echoscu") is not None,
            "dcmtk's storescu and echoscu (Debian package dcmtk)")


@contextlib.contextmanager
def listening(tmp_path: Path, redis_url: str, **env: str) -> Iterator[Listener]:
    """``python -m worker.cli listen`` on a free port, SQLite and Redis db 15, with ``FETALHC_*`` overrides."""
    port, spool, tmp = free_port(), tmp_path / "spool", tmp_path / "tmp"
    tmp.mkdir(parents=True)
    url = f"sqlite:///{tmp_path / 'listen.db'}"
    full = {k: v for k, v in os.environ.items() if not k.startswith("FETALHC_")}
    full.update({"FETALHC_DATABASE_URL": url, "FETALHC_BROKER_URL": redis_url, "FETALHC_SPOOL_DIR": str(spool),
                 "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
    full.update({f"FETALHC_{k}": v for k, v in env.items()})
    log_path = tmp_path / "listen.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "-v", "listen", "--host", "127.0.0.1",
                                 "--port", str(port)], env=full, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    listener = Listener(port, proc, spool, tmp, url, log_path)
    try:
        assert wait_for(lambda: proc.poll() is None and _port_open(port), timeout=60, interval=0.1), listener.log()
        yield listener
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def scu(tool: str, port: int, files: list[Path] = (), aet: str = "SCANNER",
        options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    argv = [tool, "-aet", aet, "-aec", "FETALHC", *options, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def chunked_send() -> Iterator[None]:
    """pynetdicom sends files as they are (file meta names the instance, the data set is sent unread)."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def _store_file(port: int, path: Path, abstract: str = UltrasoundImageStorage) -> int:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(abstract, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="FETALHC")
    assert assoc.is_established
    try:
        with chunked_send():
            return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def _impostor(src: Path, out: Path, instance_uid: str | None = None, sop_class: str | None = None) -> Path:
    """``src`` (instance B, another patient) with file meta naming another instance and/or SOP class."""
    ds = pydicom.dcmread(src)
    ds.PatientID = PATIENT_B
    ds.save_as(out, enforce_file_format=True)
    ds = pydicom.dcmread(out)
    if instance_uid is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
    if sop_class is not None:
        ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.save_as(out, enforce_file_format=False)
    return out


def test_a_data_set_that_is_not_the_instance_announced_is_refused_and_overwrites_nothing(
        dcmtk: None, redis_url: str, tmp_path: Path) -> None:
    a = tiny_us(tmp_path / "a.dcm", seed=1, patient_id="PHI-A-1")
    uid_a = str(pydicom.dcmread(a).SOPInstanceUID)
    b = tiny_us(tmp_path / "b.dcm", seed=2)
    with listening(tmp_path, redis_url) as listener:
        assert scu("storescu", listener.port, [a]).returncode == 0  # A arrives; its job waits in the queue
        spooled_a = listener.spool / f"{uid_a}.dcm"
        before = spooled_a.read_bytes()

        wrong_instance = _impostor(b, tmp_path / "b_as_a.dcm", instance_uid=uid_a)
        assert _store_file(listener.port, wrong_instance) == 0xC001  # cannot understand: not the instance named
        wrong_class = _impostor(b, tmp_path / "b_as_ct.dcm", sop_class=CTImageStorage)
        wrong_class_ds = pydicom.dcmread(wrong_class)
        assert str(wrong_class_ds.SOPClassUID) == UltrasoundImageStorage
        ct_named = _impostor(b, tmp_path / "ct.dcm")
        ds = pydicom.dcmread(ct_named)
        ds.SOPClassUID = CTImageStorage  # the data set says CT, the request says US
        ds.save_as(ct_named, enforce_file_format=False)
        ds = pydicom.dcmread(ct_named)
        ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
        ds.save_as(ct_named, enforce_file_format=False)
        assert _store_file(listener.port, ct_named) == 0xA900  # data set does not match SOP class

        assert spooled_a.read_bytes() == before  # A's file still holds A
        assert [j.sop_instance_uid for j in listener.jobs()] == [uid_a]  # no job for the impostors
        assert sorted(p.name for p in listener.spool.iterdir()) == [f"{uid_a}.dcm"]
        assert not list(listener.tmp.iterdir())  # received files removed
        assert PATIENT_B not in listener.log() and "PHI-A-1" not in listener.log()


def test_a_different_copy_while_the_first_job_waits_is_spooled_beside_it(
        dcmtk: None, redis_url: str, tmp_path: Path) -> None:
    a = tiny_us(tmp_path / "a.dcm", seed=1)
    uid = str(pydicom.dcmread(a).SOPInstanceUID)
    changed = pydicom.dcmread(a)
    changed.PixelData = bytes(len(changed.PixelData))
    changed.save_as(tmp_path / "a2.dcm")
    with listening(tmp_path, redis_url) as listener:
        assert scu("storescu", listener.port, [a]).returncode == 0
        first = (listener.spool / f"{uid}.dcm").read_bytes()
        assert scu("storescu", listener.port, [a]).returncode == 0  # the same bytes again: nothing rewritten
        assert scu("storescu", listener.port, [tmp_path / "a2.dcm"]).returncode == 0
        jobs = listener.jobs()
    assert (listener.spool / f"{uid}.dcm").read_bytes() == first  # the waiting jobs still read the first copy
    assert [Path(j.path).name for j in jobs][:2] == [f"{uid}.dcm"] * 2
    beside = Path(jobs[2].path)
    assert beside.name.startswith(f"{uid}.") and beside != listener.spool / f"{uid}.dcm"
    assert pydicom.dcmread(beside).PixelData == bytes(len(changed.PixelData))


def test_silent_sockets_cannot_lock_out_a_real_modality(dcmtk: None, redis_url: str, tmp_path: Path) -> None:
    with listening(tmp_path, redis_url, MAX_ASSOCIATIONS="4", DICOM_TIMEOUT="2") as listener:
        silent = [socket.create_connection(("127.0.0.1", listener.port), timeout=30) for _ in range(12)]
        try:
            started = time.monotonic()
            served = wait_for(lambda: scu("echoscu", listener.port).returncode == 0, timeout=20, interval=0.5)
            assert served, listener.log()[-3000:]
            assert time.monotonic() - started < 20  # within a few seconds of the silent peers' timeout
            sent = scu("storescu", listener.port, [tiny_us(tmp_path / "s.dcm")])
            assert sent.returncode == 0 and "Store Failed" not in sent.stderr, sent.stderr
            for sock in silent:  # each silent peer was dropped by the listener, not kept for ever
                sock.settimeout(20)
                assert sock.recv(16) == b""
        finally:
            for sock in silent:
                sock.close()
        assert len(listener.jobs()) == 1


def test_default_limits_serve_a_modality_beside_a_dozen_silent_sockets(dcmtk: None, redis_url: str,
                                                                        tmp_path: Path) -> None:
    with listening(tmp_path, redis_url) as listener:
        # From another address (all of 127/8 is loopback): 8 of them are held (the default per address), the
        # rest closed at once, and the modality's own address is not affected.
        silent = [socket.create_connection(("127.0.0.1", listener.port), timeout=5, source_address=("127.0.0.2", 0))
                  for _ in range(12)]
        try:
            assert scu("echoscu", listener.port).returncode == 0  # at once: 64 associations by default
        finally:
            for sock in silent:
                sock.close()


def test_callers_outside_the_allow_list_are_rejected_and_logged_by_address(dcmtk: None, redis_url: str,
                                                                           tmp_path: Path) -> None:
    with listening(tmp_path, redis_url, ALLOWED_CALLERS="SCANNER,127.0.0.0/8") as listener:
        assert scu("echoscu", listener.port, aet="SCANNER").returncode == 0
        refused = scu("echoscu", listener.port, aet="INTRUDER")
        assert refused.returncode != 0 and "Rejected" in refused.stdout + refused.stderr, refused.stderr
        us = tiny_us(tmp_path / "x.dcm", patient_id="PHI-NEVER-LOGGED")
        assert scu("storescu", listener.port, [us], aet="INTRUDER").returncode != 0
        assert wait_for(lambda: "rejected an association from 127.0.0.1" in listener.log(), timeout=10)
        assert "PHI-NEVER-LOGGED" not in listener.log()
        assert listener.jobs() == []
    with listening(tmp_path / "net", redis_url, ALLOWED_CALLERS="10.99.0.0/16") as listener:
        refused = scu("echoscu", listener.port, aet="SCANNER")  # the right title from the wrong network
        assert refused.returncode != 0 and "Rejected" in refused.stdout + refused.stderr


def _big_us(path: Path, frames: int, rows: int = 480, cols: int = 640) -> Path:
    """An uncompressed US multi-frame instance of ``frames`` x ``rows`` x ``cols`` bytes of pixels."""
    cine = np.random.default_rng(0).integers(0, 255, (frames, rows, cols), dtype=np.uint8)
    return write_us_image(path, cine, 0.2)


def test_instances_are_received_to_disk_and_one_over_the_cap_is_cut_off(dcmtk: None, redis_url: str,
                                                                        tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    big = _big_us(tmp_path / "big.dcm", frames=330)  # ~100 MB
    with listening(tmp_path, redis_url, MAX_INSTANCE_MB="200") as listener:
        before = listener.peak_rss_mb()
        sent = scu("storescu", listener.port, [big])
        assert sent.returncode == 0 and "Store Failed" not in sent.stderr, sent.stderr
        grew = listener.peak_rss_mb() - before
        uid = str(pydicom.dcmread(big, stop_before_pixels=True).SOPInstanceUID)
        assert (listener.spool / f"{uid}.dcm").stat().st_size > 100_000_000
        assert grew < 60, f"the listener's peak RSS grew {grew:.0f} MB receiving a 100 MB instance"
        print(f"listener peak RSS: {before:.0f} MB before, +{grew:.0f} MB receiving 100 MB")
    with listening(tmp_path / "net", redis_url, MAX_INSTANCE_MB="20") as listener:
        cut = scu("storescu", listener.port, [big])
        assert cut.returncode != 0 or "Store Failed" in cut.stderr or "Abort" in cut.stdout + cut.stderr
        assert listener.jobs() == [] and not any(listener.spool.glob("*.dcm"))
        assert wait_for(lambda: not list(listener.tmp.iterdir()), timeout=10)  # the partial file is gone
        assert scu("storescu", listener.port, [tiny_us(tmp_path / "small.dcm", seed=5)]).returncode == 0
        assert len(listener.jobs()) == 1
