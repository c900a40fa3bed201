"""``fetalhc bench --celery-batch``: the batched Celery path (``fetalhc.measure_batch``) end to end, eagerly.

Celery runs the task in this process (``task_always_eager``, broker ``memory://``: no Redis needed):
job rows in a temporary SQLite database, claim, read, segment in one forward pass per batch, fit,
store and finish each job, as a GPU worker does for ``fetalhc enqueue --batch``. A benchmark, never a
timed test.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import func, select

from db import Job, create_job, dispose_all, session_scope, upgrade
from worker.core.settings import Settings, get_settings
from worker.queue.celery_app import create_app
from worker.tools.bench import write_phantom_scans


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The process's ``FETALHC_*`` variables set to ``values`` for the block (the task reads get_settings())."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


def bench_celery_batch(settings: Settings, n: int = 32, batch: int = 8, amp: bool = False) -> dict[str, Any]:
    """Seconds per scan of ``fetalhc.measure_batch`` over ``n`` phantom scans in messages of ``batch``.

    The settings' device, backend, weights and gate are used; their database and broker are not
    touched (a temporary SQLite file; ``memory://``). ``amp``: the network in bf16 (``FETALHC_PRECISION=bf16``:
    torch autocast inside its forward pass, which runs in the pipeline's helper thread; OpenVINO bf16).
    """
    from worker.queue.tasks import measure_batch

    if n < 1 or batch < 1:
        raise ValueError(f"n={n}, batch={batch}: at least 1 of each")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'bench.db'}"
        env = {"FETALHC_DATABASE_URL": url, "FETALHC_BROKER_URL": "memory://", "FETALHC_DEVICE": settings.device.value,
               "FETALHC_BACKEND": settings.backend.value, "FETALHC_BATCH_SIZE": str(batch),
               "FETALHC_PRECISION": "bf16" if amp else settings.precision.value,
               "FETALHC_HEAD_PLANE_GATE": settings.head_plane_gate, "FETALHC_SR_DIR": "", "FETALHC_SR_DESTINATION": "",
               "FETALHC_METRICS_PORT": "0", "FETALHC_SPOOL_DIR": str(folder / "spool")}
        if settings.weights:
            env["FETALHC_WEIGHTS"] = settings.weights
        with _environment(env):
            app = create_app(get_settings(), set_as_current=False)
            app.conf.update(task_always_eager=True, task_eager_propagates=True)
            upgrade(url)
            paths = write_phantom_scans(folder / "scans", n + batch)
            with session_scope(url) as session:
                items = [[create_job(session, str(p), "bench", "live"), str(p), None] for p in paths]
            device = get_settings().device.value
            device_type = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"

            def run(group: list[list[Any]]) -> dict[str, Any]:
                return measure_batch.apply(args=[group]).get()

            run(items[:batch])  # loading the model and first-call costs out of the timing
            timed = items[batch:]
            t0 = time.perf_counter()
            for start in range(0, len(timed), batch):
                run(timed[start:start + batch])
            seconds = time.perf_counter() - t0
            with session_scope(url) as session:
                statuses = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            dispose_all()
    return {"task": "fetalhc.measure_batch", "eager": True, "batch": batch, "scans": n, "amp": amp,
            "device": device_type, "backend": settings.backend.value,
            "precision": "bf16" if amp else settings.precision.value, "s_per_scan": round(seconds / n, 4),
            "scans_per_s": round(n / seconds, 2), "job_statuses": statuses}
