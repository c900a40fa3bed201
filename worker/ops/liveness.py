"""Is this host's Celery worker alive? A remote-control ping through the broker (the k8s liveness probe).

The TCP probe of the metrics port only shows that the companion process (``worker.ops.sidecar``) is up;
a worker whose main process hangs, or has lost the broker for good, keeps that port open. The
worker's main process answers a ping from its own event loop, so a reply means it still reads
from Redis. When Redis itself cannot be reached, the worker is not to blame and a restart would not
help: the probe says so and passes, unless ``strict``. A pool process stuck in a task is bounded by
``FETALHC_TASK_TIME_LIMIT`` instead.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from celery.utils.nodenames import default_nodename, host_format

from worker.core.settings import Settings
from worker.queue.celery_app import create_app


@dataclass(frozen=True)
class PingResult:
    """The node asked, and whether it answered in time."""

    node: str
    alive: bool
    seconds: float
    broker_reachable: bool = True


def worker_node(hostname: str | None = None) -> str:
    """Celery's node name for a ``--hostname`` (``%h`` expanded), or this host's default ``celery@HOST``."""
    return host_format(default_nodename(hostname), hostname=socket.gethostname())


def ping_worker(settings: Settings, hostname: str | None = None, timeout_s: float = 5.0) -> PingResult:
    """Ping one worker node on the settings' broker; ``alive`` only if that node itself replied."""
    node = worker_node(hostname)
    app = create_app(settings, set_as_current=False)
    started = time.monotonic()
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
        replies = app.control.ping(destination=[node], timeout=timeout_s)
    except Exception:  # noqa: BLE001 - any broker error: the broker, not the worker, is what failed
        return PingResult(node, False, round(time.monotonic() - started, 3), broker_reachable=False)
    finally:
        app.close()
    alive = any(node in reply for reply in replies or [])
    return PingResult(node, alive, round(time.monotonic() - started, 3))
