"""The worker process (``fetalhc worker``): a prefork Celery worker beside its companion process (sidecar).

The model loads in each pool process, never in the parent (no CUDA before the fork).
"""

from __future__ import annotations

from typing import Any

from celery import signals

from db import dispose_all
from worker.core.cpus import available_cpus
from worker.core.logs import configure_logging
from worker.core.metrics import prepare_multiprocess_dir
from worker.core.settings import Settings
from worker.ops import sidecar
from worker.queue.celery_app import create_app


def run_worker(settings: Settings, concurrency: int = 1, queues: str = "live,backfill", loglevel: str = "INFO",
               hostname: str | None = None) -> None:
    """Run a prefork worker until it is stopped; the model loads in each pool process, never here.

    Beside it runs a companion process (``worker.ops.sidecar``) with the periodic sweep for lost jobs
    (``FETALHC_SWEEP_INTERVAL``) and the Prometheus endpoint (``FETALHC_METRICS_PORT``); pool
    processes count their scans in Prometheus multiprocess files that the companion serves.
    """
    if settings.metrics_port:
        prepare_multiprocess_dir()  # in the environment the pool processes and the companion inherit
    configure_logging(settings.log_format, loglevel, force=True)
    app = create_app(settings)
    app.conf.worker_concurrency = concurrency
    _connect_worker_signals(settings, concurrency)
    argv = ["worker", f"--loglevel={loglevel}", f"--concurrency={concurrency}", f"--queues={queues}",
            "--pool=prefork", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    companion = sidecar.spawn(settings, loglevel)
    try:
        app.worker_main(argv)
    finally:
        sidecar.stop(companion)


def _connect_worker_signals(settings: Settings, concurrency: int) -> None:
    """Hooks of the worker's life: logging kept as configured, per pool process setup."""

    def keep_our_logging(**_: Any) -> None:  # a receiver stops Celery from configuring logging itself
        return None

    def on_process_init(**_: Any) -> None:
        dispose_all(close=False)  # engines inherited through the fork are the parent's: never use or close them
        threads = settings.torch_threads or max(1, available_cpus() // max(concurrency, 1))
        import cv2
        import torch

        torch.set_num_threads(threads)  # processes x threads <= cores: oversubscription is many times slower
        cv2.setNumThreads(threads)  # OpenCV's pool too (the gate's smoothing); OpenVINO takes torch's count

    signals.setup_logging.connect(keep_our_logging, weak=False, dispatch_uid="fetalhc-logging")
    signals.worker_process_init.connect(on_process_init, weak=False, dispatch_uid="fetalhc-process-init")
