"""``fetalhc bench``: seconds per scan for reading, inference and the whole pipeline on this machine."""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dicom_io import DicomError, iter_scans, read_scan
from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from models.biometry import Biometry
from models.segment import measure_images
from worker.core.settings import Settings
from worker.measure.pipeline import WorkItem, load_context, measure_rows


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_bench(settings: Settings, n: int = 20, threads: int | None = None) -> dict[str, Any]:
    """Time ``n`` generated 800x540 scans: DICOM read, segmentation + fit (batch of 1 and batched), and the
    head-plane gate's verdict on each (``gate_s_median``; None with ``FETALHC_HEAD_PLANE_GATE=off``)."""
    if threads:
        torch.set_num_threads(threads)
    ctx = load_context(settings)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_us_image(Path(tmp) / f"{i}.dcm", make_phantom(hc_mm=120 + 10 * i % 200, seed=i).image, 0.15)
                 for i in range(n)]
        read_s, infer_s, gate_s = [], [], []
        scans = []
        for path in paths:
            t0 = time.perf_counter()
            scans.append(next(iter_scans(path)))
            read_s.append(time.perf_counter() - t0)
        measure_images(ctx.model.net, [scans[0].pixels], [scans[0].spacing_mm], ctx.model.input_size, ctx.device)
        if ctx.gate is not None:  # its first call pays one-off costs too
            ctx.gate.verdicts([scans[0].pixels], [None])
        for scan in scans:
            t0 = time.perf_counter()
            result = measure_images(ctx.model.net, [scan.pixels], [scan.spacing_mm], ctx.model.input_size,
                                    ctx.device)[0]
            infer_s.append(time.perf_counter() - t0)
            if ctx.gate is not None:
                t0 = time.perf_counter()
                ctx.gate.verdicts([scan.pixels], [getattr(result, "ellipse_px", None)])
                gate_s.append(time.perf_counter() - t0)
        batch = min(settings.batch_size, n)
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            chunk = scans[start : start + batch]
            measure_images(ctx.model.net, [s.pixels for s in chunk], [s.spacing_mm for s in chunk],
                           ctx.model.input_size, ctx.device, gate=ctx.gate)
        batched = (time.perf_counter() - t0) / n
    per_scan = [r + i + g for r, i, g in zip(read_s, infer_s, gate_s or [0.0] * n)]  # the gate included
    return {
        "device": str(ctx.device), "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "model": f"{ctx.model.model_name} {ctx.model.model_version[:12]}", "input_size": list(ctx.model.input_size),
        "scans": n, "image": "800x540 uint8",
        "read_s_median": round(statistics.median(read_s), 4),
        "measure_s_median": round(statistics.median(infer_s), 4),
        "measure_s_p95": round(_percentile(infer_s, 95), 4),
        "per_scan_s_median": round(statistics.median(per_scan), 4),
        f"batched_{batch}_s_per_scan": round(batched, 4),
        "head_plane_gate": "off" if ctx.gate is None else "on",
        "gate_s_median": round(statistics.median(gate_s), 4) if gate_s else None,
        "gate_share_of_measure": round(statistics.median(gate_s) / statistics.median(infer_s), 3) if gate_s else None,
        "scans_per_hour_one_process": int(3600 / statistics.median(per_scan)),
    }


def run_cine_bench(settings: Settings, path: Path, threads: int | None = None) -> dict[str, Any]:
    """Time the pipeline (read, measure, pick the best frame; nothing stored) on one multi-frame file.

    Frames follow the settings: ``FETALHC_MAX_FRAMES=0`` measures every frame, to compare with the cap.
    """
    if threads:
        torch.set_num_threads(threads)
    try:
        warm = read_scan(path, 1)  # the first forward pass pays one-off costs: keep it out of the timing
    except DicomError as exc:
        raise ValueError(f"cannot time {Path(path).name}: {exc}") from exc
    ctx = load_context(settings)
    measure_images(ctx.model.net, [warm.pixels], [warm.spacing_mm], ctx.model.input_size, ctx.device)
    item = WorkItem(Path(path))
    t0 = time.perf_counter()
    rows = measure_rows(ctx, [item])
    seconds, row = time.perf_counter() - t0, rows[0]
    plan = item.frames
    return {
        "device": str(ctx.device), "torch_threads": torch.get_num_threads(),
        "model": f"{ctx.model.model_name} {ctx.model.model_version[:12]}", "file": Path(path).name,
        "max_frames": settings.max_frames, "frames_in_instance": plan.total if plan else None,
        "frame_rule": plan.rule.value if plan else None, "frames_measured": len(plan.frames) if plan else 0,
        "seconds": round(seconds, 2), "read_s": round(item.read_ms / 1000, 2),
        "infer_s": round(item.infer_ms / 1000, 2), "rows": len(rows), "status": row["status"],
        "best_frame": row.get("frame"), "hc_mm": row.get("hc_mm"), "quality": row.get("quality"),
    }
