"""``fetalhc bench`` sections as one JSON report: backends (forward vs pipeline), enqueue rate, results queries.

``fetalhc bench --backends all --enqueue 20000 --rows 1000000 --out bench.json`` measures what issue 14 asks
of this machine; each section runs only when asked, and the report carries the command line that made it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from worker.core.settings import Settings

ALL_BACKENDS = ("torch", "openvino", "openvino:bf16", "onnxruntime")


def wants_report(args: argparse.Namespace) -> bool:
    """Whether the command asked for a section of the report (else the classic per-scan bench runs)."""
    return bool(args.backends or args.enqueue or args.rows or args.celery_batch or args.profile
                or getattr(args, "process", 0))


def _backends(text: str) -> list[str]:
    return list(ALL_BACKENDS) if text == "all" else [b.strip() for b in text.split(",") if b.strip()]


def build_report(settings: Settings, args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """The sections asked for by ``args``, measured now, with the machine and the command that reran them."""
    import torch

    from worker.tools.bench import bench_backends, bench_rows, machine, profile_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():  # before anything is measured
        raise ValueError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False, "
                         f"torch {torch.__version__}); run it on a GPU node with a CUDA build of torch")
    if args.device:
        settings = settings.replace(device=args.device)
    report: dict[str, Any] = {
        "command": "fetalhc " + " ".join(sys.argv[1:] if argv is None else argv),
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "device": settings.device.value, "amp": bool(args.amp),
    }
    batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
    if args.backends:
        report["backends"] = bench_backends(settings, n=args.n, backends=_backends(args.backends),
                                            batch_sizes=batch_sizes, repeats=args.repeats, amp=args.amp)
    if args.profile:  # after the backends: its exported models' threads must not slow the torch yardstick
        report["profile"] = profile_pipeline(settings, n=args.n)
    if args.celery_batch:
        from worker.queue.batch_bench import bench_celery_batch

        report["celery_measure_batch"] = [bench_celery_batch(settings, n=max(args.n, size), batch=size, amp=args.amp)
                                          for size in sorted({1, *batch_sizes})]
    if getattr(args, "process", 0):
        from worker.tools.process_bench import bench_process

        workers = [int(w) for w in str(args.process_workers).split(",") if w.strip()]
        report["process"] = bench_process(args.process, workers, batch_size=args.process_batch or settings.batch_size,
                                          device=settings.device.value, repeats=args.repeats,
                                          compare_cpu=args.compare_cpu, cpus=args.threads or None)
    if args.enqueue:
        from worker.queue.enqueue_bench import bench_enqueue

        report["enqueue"] = bench_enqueue(settings, args.enqueue, batch=args.enqueue_batch)
    if args.rows:
        report["results_query"] = bench_rows(args.rows, args.database_url)
    report["machine_after"] = {"load_average_1m": machine()["load_average_1m"]}
    return report


def write_report(report: dict[str, Any], out: str | None) -> None:
    """Print the report as one JSON document, and write it to ``out`` too when given."""
    text = json.dumps(report, indent=2, default=str)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The report's options on the ``bench`` parser."""
    p.add_argument("--backends", default=None, metavar="LIST",
                   help="time the bare 3-flip forward pass and the pipeline per backend[:precision]: all (torch, "
                        "openvino, openvino:bf16, onnxruntime), or e.g. torch,openvino:bf16")
    p.add_argument("--batch-sizes", default="8", metavar="LIST",
                   help="batch sizes besides 1 for --backends and --celery-batch, e.g. 8,32 [8]")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each forward pass [5]")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="overrides FETALHC_DEVICE (cuda fails clearly without a CUDA device)")
    p.add_argument("--amp", action="store_true",
                   help="every backend in bf16 (torch under autocast: GPU figures; OpenVINO bf16; ONNX Runtime refuses)")
    p.add_argument("--profile", action="store_true",
                   help="where a scan's time goes: the pipeline's stages and top functions under cProfile "
                        "(FETALHC_BACKEND / FETALHC_PRECISION as set)")
    p.add_argument("--celery-batch", action="store_true",
                   help="time the measure_batch task end to end, Celery in eager mode (no broker), at batch 1 and "
                        "each --batch-sizes")
    p.add_argument("--enqueue", type=int, default=0, metavar="N",
                   help="enqueue rate of a generated archive of N files into FETALHC_DATABASE_URL and the broker "
                        "(its jobs and messages are deleted afterwards)")
    p.add_argument("--enqueue-batch", type=int, default=1, metavar="B", help="scans per message for --enqueue [1]")
    p.add_argument("--process", type=int, default=0, metavar="N",
                   help="end to end: `fetalhc process` (fresh processes) of a generated archive of N scanner-sized "
                        "JPEG DICOMs: start-up, steady scans/s and the ratio to the bare torch 3-flip forward pass")
    p.add_argument("--process-workers", default="1", metavar="LIST",
                   help="for --process: how many `fetalhc process` side by side, each count one run, e.g. 1,4,8 [1]")
    p.add_argument("--process-batch", type=int, default=0, metavar="B",
                   help="FETALHC_BATCH_SIZE of the --process runs [FETALHC_BATCH_SIZE]")
    p.add_argument("--compare-cpu", type=int, default=0, metavar="N",
                   help="with --process on CUDA: N files measured on the device and with FETALHC_DEVICE=cpu; the HC "
                        "differences and differing decisions")
    p.add_argument("--rows", type=int, default=0, metavar="N", help="results query p50/p95 at N rows")
    p.add_argument("--database-url", default=None,
                   help="scratch database for --rows [a temporary SQLite file]; its own rows are deleted after")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON report here")
