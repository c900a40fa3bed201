"""``fetalhc bench``: seconds per scan for reading, inference and the whole pipeline on this machine."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import delete, insert

from db import Measurement, query_measurements, session_scope, upgrade
from dicom_io import DicomError, iter_scans, read_scan
from dicom_io.phantom import make_phantom
from dicom_io.writer import write_us_image
from models.evaluation.backend_bench import DEFAULT_BACKENDS, bench_forward, split_spec
from models.geometry.biometry import Biometry
from models.plane.gating import measure_gated
from models.segmentation.network import pick_device
from models.segmentation.segment import measure_images
from models.segmentation.weights import cached_model
from worker.core.cpus import available_cpus
from worker.core.settings import Settings
from worker.measure.pipeline import WorkItem, load_context, measure_rows


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_bench(settings: Settings, n: int = 20, threads: int | None = None) -> dict[str, Any]:
    """Time ``n`` generated 800x540 scans: DICOM read, segmentation + fit (batch of 1 and batched), the
    head-plane gate's verdict on each (``gate_s_median``; None with ``FETALHC_HEAD_PLANE_GATE=off``) and the plane
    classifier's answer on each, one at a time and in batches (``classifier_s_median``,
    ``classifier_batched_s_per_scan``; None without ``FETALHC_PLANE_CLASSIFIER``)."""
    if threads:
        torch.set_num_threads(threads)
    ctx = load_context(settings)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_us_image(Path(tmp) / f"{i}.dcm", make_phantom(hc_mm=120 + 10 * i % 200, seed=i).image, 0.15)
                 for i in range(n)]
        read_s, infer_s, gate_s, classifier_s = [], [], [], []
        scans = []
        for path in paths:
            t0 = time.perf_counter()
            scans.append(next(iter_scans(path)))
            read_s.append(time.perf_counter() - t0)
        measure_images(ctx.net, [scans[0].pixels], [scans[0].spacing_mm], ctx.model.input_size, ctx.device)
        if ctx.gate is not None:  # its first call pays one-off costs too
            ctx.gate.verdicts([scans[0].pixels], [None])
        if ctx.classifier is not None:
            ctx.classifier.classify([scans[0].pixels])
        for scan in scans:
            t0 = time.perf_counter()
            result = measure_images(ctx.net, [scan.pixels], [scan.spacing_mm], ctx.model.input_size,
                                    ctx.device)[0]
            infer_s.append(time.perf_counter() - t0)
            if ctx.gate is not None:
                t0 = time.perf_counter()
                ctx.gate.verdicts([scan.pixels], [getattr(result, "ellipse_px", None)])
                gate_s.append(time.perf_counter() - t0)
            if ctx.classifier is not None:
                t0 = time.perf_counter()
                ctx.classifier.classify([scan.pixels])
                classifier_s.append(time.perf_counter() - t0)
        batch = min(settings.batch_size, n)
        measure_gated(ctx.net, [s.pixels for s in scans[:batch]], [s.spacing_mm for s in scans[:batch]],
                      ctx.model.input_size, ctx.device, gate=ctx.gate,
                      classifier=ctx.classifier)  # a new batch size compiles once: untimed
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            chunk = scans[start : start + batch]
            measure_gated(ctx.net, [s.pixels for s in chunk], [s.spacing_mm for s in chunk],
                          ctx.model.input_size, ctx.device, gate=ctx.gate, classifier=ctx.classifier)
        batched = (time.perf_counter() - t0) / n
        classifier_batched = None
        if ctx.classifier is not None:
            t0 = time.perf_counter()
            for start in range(0, n, batch):
                ctx.classifier.classify([s.pixels for s in scans[start : start + batch]])
            classifier_batched = (time.perf_counter() - t0) / n
    # the gate and the classifier included
    per_scan = [r + i + g + c for r, i, g, c in zip(read_s, infer_s, gate_s or [0.0] * n, classifier_s or [0.0] * n)]
    return {
        "device": str(ctx.device), "backend": _backend_name(ctx), "precision": _precision_name(ctx),
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
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
        "plane_classifier": "off" if ctx.classifier is None else f"SonoNet-16 {ctx.classifier.sha256[:12]}",
        "classifier_precision": None if ctx.classifier is None else ctx.classifier.precision.value,
        "classifier_s_median": round(statistics.median(classifier_s), 4) if classifier_s else None,
        "classifier_batched_s_per_scan": round(classifier_batched, 4) if classifier_batched is not None else None,
        "classifier_share_of_measure": (round(statistics.median(classifier_s) / statistics.median(infer_s), 3)
                                        if classifier_s else None),
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
    measure_images(ctx.net, [warm.pixels], [warm.spacing_mm], ctx.model.input_size, ctx.device)
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


# -- the report of issue 14: backends, pipeline against the bare forward pass, results queries ------------------------


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPUs usable, load, torch threads, CUDA device."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": platform.processor() or platform.machine(), "cpus_usable": available_cpus(),
            "load_average_1m": _load_average(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda_device": cuda, "python": platform.python_version()}


def write_phantom_scans(folder: Path, n: int) -> list[Path]:
    """``n`` scanner-sized (800 x 540) phantom heads of known HC as US Image Storage files, 0.15 mm pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_us_image(folder / f"{i}.dcm", make_phantom(hc_mm=120 + (37 * i) % 200, seed=i).image, 0.15)
            for i in range(n)]


def _pipeline_seconds(ctx: Any, paths: list[Path]) -> float:
    """Seconds per scan of ``measure_rows`` (read, segment, fit, gate, growth facts; nothing stored) over ``paths``."""
    t0 = time.perf_counter()
    measure_rows(ctx, [WorkItem(p) for p in paths])
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / len(paths)


# The pipeline's target (issue 14): per scan at most this fraction of the bare torch float32 3-flip forward pass.
TARGET_RATIO = 0.6


def bench_backends(settings: Settings, n: int = 16, backends: Sequence[str] = DEFAULT_BACKENDS,
                   batch_sizes: Sequence[int] = (8,), repeats: int = 5, amp: bool = False,
                   cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Per backend (``name[:precision]``) and batch size: the bare 3-flip forward pass and the whole pipeline.

    The forward pass is ``models.evaluation.backend_bench.bench_forward`` (random input at the model's size); the
    pipeline is ``measure_rows`` on ``n`` written phantom DICOMs, one scan per call (``single``, median) and
    ``FETALHC_BATCH_SIZE`` = each batch size over all of them (``batched``, best of 2); the gate follows the
    settings. ``ratio_to_forward``: pipeline over the same backend's forward pass at the same batch size;
    ``ratio_to_torch_f32``: over the bare torch float32 forward pass measured in the same run (the target's
    yardstick, TARGET_RATIO); ``target_met``: single and every batched ratio within it, batched faster than single.
    ``amp``: every backend in bf16 (torch autocast: a GPU's figures; the yardstick stays torch float32).
    """
    if n < 1:
        raise ValueError(f"n={n}: at least 1 scan")
    device = pick_device(settings.device)
    model = cached_model(settings.weights, str(device))
    sizes = sorted({1, *batch_sizes})
    out = []
    # Timed first, before any exported model is loaded: once OpenVINO has run in a process, torch's forward pass
    # there is up to 1.5 x slower, which would flatter every ratio below.
    yardstick = {r.batch_size: r.seconds_per_image
                 for r in bench_forward(model, ["torch"], sizes, repeats=repeats, device=device, cache_dir=cache_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_phantom_scans(Path(tmp), n)
        for spec in backends:
            mine = bench_forward(model, [spec], sizes, repeats=repeats, device=device, cache_dir=cache_dir, amp=amp)
            entry: dict[str, Any] = {"backend": mine[0].backend, "asked": spec, "precision": mine[0].precision,
                                     "device": str(device), "amp": mine[0].amp, "scans": n,
                                     "forward": [r.as_dict() for r in mine]}
            errors = [r.error for r in mine if r.error]
            if errors:
                entry["error"] = errors[0]
                out.append(entry)
                continue
            name = split_spec(spec)[0]
            precision = mine[0].precision
            ctx = load_context(settings.replace(backend=name, precision=precision, batch_size=1))
            _pipeline_seconds(ctx, paths[:1])  # one-off costs (first call, gate) out of the timing
            single = statistics.median(_pipeline_seconds(ctx, [p]) for p in paths)
            fwd = {r.batch_size: r.seconds_per_image for r in mine}
            pipeline = {"single_s_per_scan": round(single, 4), "single_ratio_to_forward": round(single / fwd[1], 2),
                        "single_ratio_to_torch_f32": round(single / yardstick[1], 2)}
            met = single <= TARGET_RATIO * yardstick[1]
            for size in sizes:
                if size == 1:
                    continue
                batched_ctx = load_context(settings.replace(backend=name, precision=precision, batch_size=size))
                _pipeline_seconds(batched_ctx, paths[:size])
                batched = min(_pipeline_seconds(batched_ctx, paths) for _ in range(2))
                pipeline[f"batched_{size}_s_per_scan"] = round(batched, 4)
                pipeline[f"batched_{size}_ratio_to_forward"] = round(batched / fwd[size], 2)
                pipeline[f"batched_{size}_ratio_to_torch_f32"] = round(batched / yardstick[size], 2)
                met = met and batched <= TARGET_RATIO * yardstick[size] and batched < single
            entry["pipeline"] = pipeline
            entry["torch_f32_forward_s_per_scan"] = {str(k): v for k, v in yardstick.items()}
            entry["target_met"] = met
            entry["head_plane_gate"] = "off" if ctx.gate is None else "on"
            out.append(entry)
    return out


# The pipeline's stages for ``profile_pipeline``: (stage, module, function) as cProfile names them.
PROFILE_STAGES: tuple[tuple[str, str, str], ...] = (
    ("read (decode, calibration)", "dicom_io/encoded.py", "open_encoded_scans"),
    ("prepare input (resize, normalise)", "models/segmentation/preprocess.py", "prepare_input"),
    ("forward pass (3 flips)", "models/segmentation/segment.py", "predict_member_logits"),
    ("measure the mean (contour, fit, quality)", "models/geometry/biometry.py", "measure_head_on_grid"),
    ("measure each flip (contour, fit)", "models/geometry/biometry.py", "hc_on_grid"),
    ("gate: whole-image CNN", "models/plane/net.py", "plane_logits"),
    ("gate: skull-echo features", "models/plane/skull_echo.py", "skull_features"),
    ("row (growth facts, notes)", "worker/measure/pipeline.py", "_row"),
)


def profile_pipeline(settings: Settings, n: int = 16, top: int = 15) -> dict[str, Any]:
    """Where a scan's time goes: ``measure_rows`` one scan at a time on ``n`` phantom DICOMs under cProfile.

    ``stages_ms_per_scan``: cumulative milliseconds per scan of each of PROFILE_STAGES (cProfile's own
    overhead inflates Python-heavy stages a little); ``top_functions``: the ``top`` functions by own time.
    The forward pass of the next batch runs in a helper thread, which cProfile does not see: with one scan
    per call, each scan's forward pass is waited for, so the stages add up to the whole.
    """
    import cProfile
    import pstats

    ctx = load_context(settings.replace(batch_size=1))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_phantom_scans(Path(tmp), n)
        measure_rows(ctx, [WorkItem(paths[0])])  # one-off costs out of the profile
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        for path in paths:
            profiler.enable()
            measure_rows(ctx, [WorkItem(path)])
            profiler.disable()
        wall = (time.perf_counter() - t0) / n
        # The forward pass runs in the helper thread, unseen by cProfile: timed directly (same input, same backend).
        forward_s = _forward_seconds(ctx, paths[0])
    stats = pstats.Stats(profiler)
    by_name = {(file, name): (calls, tottime, cumtime) for (file, _, name), (_, calls, tottime, cumtime, _) in
               stats.stats.items()}  # type: ignore[attr-defined]

    def cumulative(module: str, function: str) -> float:
        return sum(v[2] for (file, name), v in by_name.items() if name == function and file.endswith(module))

    stages = {stage: round(1000 * cumulative(module, function) / n, 2) for stage, module, function in PROFILE_STAGES}
    stages["forward pass (3 flips)"] = round(1000 * forward_s, 2)
    ranked = sorted(by_name.items(), key=lambda kv: kv[1][1], reverse=True)[:top]
    return {
        "scans": n, "backend": _backend_name(ctx), "precision": _precision_name(ctx),
        "head_plane_gate": "off" if ctx.gate is None else "on",
        "pipeline_ms_per_scan": round(1000 * wall, 2), "stages_ms_per_scan": stages,
        "top_functions": [{"function": f"{Path(file).name}:{name}", "calls_per_scan": round(calls / n, 1),
                           "own_ms_per_scan": round(1000 * tottime / n, 3),
                           "cumulative_ms_per_scan": round(1000 * cumtime / n, 3)}
                          for (file, name), (calls, tottime, cumtime) in ranked],
    }


def _forward_seconds(ctx: Any, path: Path, repeats: int = 10) -> float:
    """Median seconds of the network's 3-flip forward pass on one scan's prepared input (through ``ctx.net``)."""
    from models.segmentation.preprocess import prepare_input
    from models.segmentation.segment import predict_member_logits

    scan = next(iter_scans(path))
    batch = prepare_input(scan.pixels, ctx.model.input_size)[None].to(ctx.device)
    predict_member_logits(ctx.net, batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_member_logits(ctx.net, batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _backend_name(ctx: Any) -> str:
    backend = getattr(ctx.net, "backend", None)
    return str(getattr(backend, "value", "torch"))


def _precision_name(ctx: Any) -> str:
    precision = getattr(ctx.net, "precision", None)
    return str(getattr(precision, "value", "f32"))


def _percentiles(seconds: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * _percentile(seconds, 50), 2), "p95_ms": round(1000 * _percentile(seconds, 95), 2),
            "queries": len(seconds)}


def bench_rows(rows: int, database_url: str | None = None, repeats: int = 30, seed: int = 0) -> dict[str, Any]:
    """Results-query latency at ``rows`` measurement rows: ``db.query_measurements`` p50/p95 on typical filters.

    Fills ``database_url`` (default: a temporary SQLite file; PostgreSQL when given) with ``rows`` rows of
    its own (model version ``bench-rows-<hex>``: 10 images per patient, study dates over ten years, 90%
    measured, 7% needs_review, 2% failed, 1% not_head), times one patient's rows, a 30-day study date
    range and a status (first 100 rows each, as ``fetalhc results --limit 100``), then deletes its rows.
    """
    if rows < 1:
        raise ValueError(f"rows={rows}: at least 1")
    with contextlib.ExitStack() as stack:
        if database_url is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            database_url = f"sqlite:///{tmp / 'bench.db'}"
        upgrade(database_url)
        version = f"bench-rows-{uuid.uuid4().hex[:12]}"
        rng = random.Random(seed)
        first_day = dt.date(2015, 1, 1)
        patients = max(1, rows // 10)
        statuses = ["measured"] * 90 + ["needs_review"] * 7 + ["failed"] * 2 + ["not_head"]
        now = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        try:
            for start in range(0, rows, 5000):
                chunk = [{
                    "sop_instance_uid": f"2.25.{version[11:]}.{i}", "frame": 1, "model_version": version,
                    "model_name": "bench", "path": f"/bench/{i}.dcm", "patient_id": f"P{i % patients:07d}",
                    "study_instance_uid": f"2.25.{i // 3}", "series_instance_uid": f"2.25.{i // 3}.1",
                    "study_date": first_day + dt.timedelta(days=rng.randrange(3650)),
                    "status": rng.choice(statuses), "hc_mm": round(rng.uniform(80, 340), 2),
                    "created_at": now, "updated_at": now,
                } for i in range(start, min(rows, start + 5000))]
                with session_scope(database_url) as session:
                    session.execute(insert(Measurement), chunk)
            fill_s = time.perf_counter() - t0
            timings: dict[str, list[float]] = {"patient": [], "study_date_30_days": [], "status_needs_review": []}
            with session_scope(database_url) as session:
                for _ in range(repeats):
                    since = first_day + dt.timedelta(days=rng.randrange(3620))
                    for key, filters in (("patient", {"patient_id": f"P{rng.randrange(patients):07d}"}),
                                         ("study_date_30_days", {"since": since,
                                                                 "until": since + dt.timedelta(days=30)}),
                                         ("status_needs_review", {"status": "needs_review"})):
                        t0 = time.perf_counter()
                        found = query_measurements(session, limit=100, **filters)
                        timings[key].append(time.perf_counter() - t0)
                        session.expunge_all()
                        assert isinstance(found, list)
        finally:
            with session_scope(database_url) as session:
                session.execute(delete(Measurement).where(Measurement.model_version == version))
    return {"rows": rows, "database": database_url.split(":", 1)[0], "fill_s": round(fill_s, 2),
            "limit": 100, **{key: _percentiles(values) for key, values in timings.items()}}
