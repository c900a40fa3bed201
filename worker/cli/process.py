"""``fetalhc process``: measure files in this process, without a broker."""

from __future__ import annotations

import argparse
from pathlib import Path

from worker.cli.output import _print_json
from worker.core.settings import get_settings

# Each command imports what it runs when it runs (torch, Celery, pynetdicom are heavy: `fetalhc --help` and the
# liveness probe stay fast).

OUTPUT_FIELDS = ("path", "sop_instance_uid", "frame", "status", "reason", "detail", "hc_mm", "bpd_mm", "ofd_mm",
                 "quality", "head_plane_score", "flags", "spacing_mm_x", "spacing_mm_y", "spacing_source", "ga_days",
                 "ga_source", "ga_estimate_days", "ga_formula", "hc_z_score", "hc_centile", "growth_standard",
                 "growth_flags", "centile_reason", "plane_label", "plane_probability", "model_name", "model_version",
                 "total_ms")


def cmd_process(args: argparse.Namespace) -> int:
    """Measure files in this process (no broker), storing rows in the configured database."""
    from db import session_scope, upgrade
    from db.repository import create_jobs
    from worker.core.files import expand_paths
    from worker.measure.pipeline import WorkItem, load_context, measure_items

    settings = get_settings()
    bound_threads(settings.torch_threads)
    upgrade(settings.database_url)
    ctx = load_context(settings)
    paths = list(expand_paths(args.paths))
    ga_days = _manifest_ga(args.manifest, paths)
    exit_code = 0
    for start in range(0, len(paths), settings.batch_size):
        chunk = paths[start : start + settings.batch_size]
        with session_scope(settings.database_url) as session:  # the batch's jobs in one INSERT
            job_ids = create_jobs(session, [(str(p.resolve()), ga_days.get(str(p.resolve()))) for p in chunk], "cli")
        items = [WorkItem(p, j, ga_days.get(str(p.resolve()))) for p, j in zip(chunk, job_ids)]
        rows = measure_items(ctx, items)
        for item in items:  # an SR: an OB-GYN report recorded (not a scan, never a failure), or another SR passed over
            if item.report is not None:
                if args.json:
                    _print_json(item.report.summary())
                else:
                    print(f"{item.path}: report ({item.report.reason}: {item.report.detail})")
        for row in rows:
            if row["status"] == "failed":
                exit_code = 3
            if args.json:
                _print_json({k: row.get(k) for k in OUTPUT_FIELDS})
            else:
                hc = f"{row['hc_mm']:.1f} mm" if row.get("hc_mm") is not None else "-"
                print(f"{row['path']}: {row['status']} HC {hc}"
                      + (f" ({row['reason']}: {row['detail']})" if row.get("reason") else "")
                      + (f" [{row['flags']}]" if row.get("flags") else "")
                      + (f" plane {row['plane_label']} ({row['plane_probability']:.2f})" if row.get("plane_label") else ""))
    return exit_code


def bound_threads(setting: int, processes: int = 1) -> int:
    """Set torch's and OpenCV's CPU threads as a worker process does: ``FETALHC_TORCH_THREADS``, else this process's
    share of the CPUs it may use (so several ``fetalhc process`` side by side do not oversubscribe the cores)."""
    import cv2
    import torch

    from worker.core.cpus import available_cpus

    threads = setting or max(1, available_cpus() // max(processes, 1))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return threads


def _manifest_ga(manifest: str | None, paths: list[Path]) -> dict[str, float]:
    """GA in days per resolved path from a dating manifest CSV (empty without one)."""
    if not manifest:
        return {}
    from worker.measure.manifest import Manifest

    return Manifest.load(manifest).ga_days_for_files(paths)
