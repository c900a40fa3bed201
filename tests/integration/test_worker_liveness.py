"""``fetalhc ping-worker`` against a real worker on the real Redis: alive, hung (SIGSTOP), alive again, absent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_celery_worker import _env
from tests.services import wait_for

pytestmark = pytest.mark.integration
FETALHC = [sys.executable, "-m", "worker.cli"]


def _ping(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FETALHC, "ping-worker", "--timeout", "2", *extra], env=env, capture_output=True,
                          text=True, timeout=60)


def test_ping_tells_a_live_worker_from_a_hung_one(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    env = _env(pg_url, redis_url, tmp_path)
    node = "liveness-test@%h"
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([*FETALHC, "worker", "--concurrency", "1", "--hostname", node], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: _ping(env, "--hostname", node).returncode == 0, timeout=120), \
            (tmp_path / "worker.log").read_text()[-3000:]
        answered = _ping(env, "--hostname", node)
        assert "liveness-test@" in answered.stdout and "answered" in answered.stdout

        os.kill(worker.pid, signal.SIGSTOP)  # the main process hangs; the metrics companion would stay up
        hung = _ping(env, "--hostname", node)
        assert hung.returncode == 1 and "did not answer within 2 s" in hung.stderr

        os.kill(worker.pid, signal.SIGCONT)
        assert wait_for(lambda: _ping(env, "--hostname", node).returncode == 0, timeout=30)

        # Another node's silence is not this one's answer.
        assert _ping(env, "--hostname", "nobody@%h").returncode == 1
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        log.close()


def test_an_unreachable_broker_passes_unless_strict_and_never_crashes(tmp_path: Path, pg_url: str) -> None:
    """A Redis outage must not restart every worker: the worker is not what failed."""
    env = _env(pg_url, "redis://127.0.0.1:1/0", tmp_path)
    lenient, strict = _ping(env), _ping(env, "--strict")
    assert lenient.returncode == 0 and "broker cannot be reached" in lenient.stderr
    assert strict.returncode == 2 and "failing (--strict)" in strict.stderr
    assert "Traceback" not in lenient.stderr + strict.stderr
