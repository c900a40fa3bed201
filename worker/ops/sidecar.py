"""The worker's companion process: the periodic sweep for lost jobs (and spool retention), and metrics.

``fetalhc worker`` starts it as a fresh interpreter beside the Celery main process, rather than
as threads in that process: the main process forks pool processes (at start, and again whenever
one dies), and a fork taken while another thread holds a lock (a module import, a connection
pool) leaves the new pool process stuck on that lock for ever. The companion imports neither
torch nor the model, exits when its parent is gone (checked every half second) or on SIGTERM,
and ignores SIGINT (Ctrl-C reaches the whole process group; the main process stops it).

Run by hand only for debugging: ``python -m worker.ops.sidecar --parent PID``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from worker.core.logs import configure_logging
from worker.core.settings import Settings, get_settings
from worker.ops.housekeeping import PeriodicSweeper
from worker.ops.metrics_server import start_metrics_server

log = logging.getLogger(__name__)


def spawn(settings: Settings, loglevel: str = "INFO") -> subprocess.Popen[bytes] | None:
    """Start the companion of this process (None when the sweep and the metrics are both disabled)."""
    if not settings.sweep_interval_s and not settings.metrics_port:
        return None
    return subprocess.Popen([sys.executable, "-m", "worker.ops.sidecar", "--parent", str(os.getpid()),
                             "--loglevel", loglevel], env=dict(os.environ))


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Stop a companion started by ``spawn`` (SIGTERM, then SIGKILL)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def run(settings: Settings, parent_pid: int, done: threading.Event) -> None:
    """Serve metrics and sweep (and prune the spool, see ``PeriodicSweeper``) every ``sweep_interval_s``.

    Runs until ``done`` is set or the parent is gone.
    """
    server: Any = start_metrics_server(settings) if settings.metrics_port else None
    sweeper = PeriodicSweeper(settings) if settings.sweep_interval_s else None
    if sweeper is not None:
        sweeper.warn_if_too_eager()
    next_sweep = time.monotonic() + settings.sweep_interval_s
    try:
        while not done.wait(0.5):
            if os.getppid() != parent_pid:
                log.info("worker process gone; companion exits")
                break
            if sweeper is not None and time.monotonic() >= next_sweep:
                sweeper.tick()
                next_sweep = time.monotonic() + settings.sweep_interval_s
    finally:
        if server is not None:
            server.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m worker.ops.sidecar --parent PID [--loglevel INFO]``."""
    parser = argparse.ArgumentParser(prog="python -m worker.ops.sidecar")
    parser.add_argument("--parent", type=int, required=True, help="pid of the worker's main process")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_format, args.loglevel, force=True)
    done = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    run(settings, args.parent, done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
