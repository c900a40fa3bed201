"""Private services and worker processes for the queue tests: our own Redis and PostgreSQL to stop and start.

The shared PostgreSQL (5432) and Redis (6379) serve other people's tests at the same time, so
tests that stop a service, or that must not see others' messages, run their own on a free port.
Everything started here is stopped and removed when the fixture ends, whatever the test did.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class PrivateRedis:
    """A redis-server of our own on a free port, without persistence (a stop loses every message)."""

    def __init__(self, workdir: Path) -> None:
        require(shutil.which("redis-server") is not None, "redis-server (for a private Redis)")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if not wait_for(self.ping, timeout=20, interval=0.05):
            raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.exceptions.RedisError:
            return False

    def stop(self) -> None:
        """Stop it (SIGKILL: whatever was queued is gone, as after a crash without persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)
        self.proc = None


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temporary folder, trust auth, a free port)."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        found = bins[-1] if bins else shutil.which("initdb")
        require(found is not None, "PostgreSQL server binaries (initdb, pg_ctl)")
        self.bindir = Path(found).parent  # type: ignore[arg-type]
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fetalhc-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            require(shutil.which("runuser") is not None, "runuser (to run PostgreSQL as postgres)")
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c max_connections=50"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass  # not running
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A running private Redis for one test (stopped afterwards)."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def private_pg() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL cluster for one test (stopped and deleted afterwards)."""
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        from db import dispose_all

        dispose_all()
        server.destroy()


def worker_env(database_url: str, broker_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment of a test worker: its services, CPU, one torch thread, JSON logs, a quick sweeper."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FETALHC_")}
    env.update({
        "FETALHC_DATABASE_URL": database_url, "FETALHC_BROKER_URL": broker_url, "FETALHC_DEVICE": "cpu",
        "FETALHC_SPOOL_DIR": str(tmp_path / "spool"), "FETALHC_TORCH_THREADS": "1", "FETALHC_LOG_FORMAT": "json",
        "FETALHC_METRICS_PORT": "0", "FETALHC_SWEEP_INTERVAL": "1", "FETALHC_STALE_AFTER": "8",
        "FETALHC_TASK_TIME_LIMIT": "120", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO),
    })
    env.update({f"FETALHC_{k}": v for k, v in extra.items()})
    return env


class WorkerProcess:
    """``python -m worker.cli worker`` in its own session (so the whole process group can be killed)."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 1) -> None:
        self.log_path = log_path
        log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--concurrency", str(concurrency), "--loglevel", "INFO"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the main process and its pool children at once (no warm shutdown, no acks)."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        _reap_group(self.proc.pid)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left of the group."""
        if self.alive:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        _reap_group(self.proc.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _reap_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)  # pool children orphaned by a killed main process
    except ProcessLookupError:
        pass


@pytest.fixture()
def workers() -> Iterator[list[WorkerProcess]]:
    """A list to append started workers to; each is stopped (group killed) when the test ends."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


@contextlib.contextmanager
def running_orthanc(root: Path, http_port: int, dicom_port: int, **config: Any) -> Iterator[str]:
    """A private Orthanc (AE ORTHANC, no auth, loopback only) under ``root``; yields its REST root.

    ``config`` adds to or overrides Orthanc's settings (modalities, plugins, DICOMweb...).
    """
    require(shutil.which("Orthanc") is not None, "Orthanc (Debian package orthanc)")
    settings = {
        "Name": "fetalhc-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpCompressionEnabled": False,
        "DicomCheckCalledAet": False, "DicomCheckModalityHost": False, "Plugins": [], **config,
    }
    (root / "orthanc.json").write_text(json.dumps(settings))
    http = f"http://127.0.0.1:{http_port}"
    with open(root / "orthanc.log", "w") as log:
        proc = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (root / "orthanc.log").read_text()[-2000:]
                try:
                    with urllib.request.urlopen(f"{http}/system", timeout=1):
                        break
                except urllib.error.HTTPError:  # an answer (401 with authentication on): it is up
                    break
                except OSError:
                    assert time.monotonic() < deadline, "Orthanc did not start in 30 s"
                    time.sleep(0.2)
            yield http
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
