"""``fetalhc bench --process N``: ``fetalhc process`` end to end on a generated archive of scanner-sized JPEG DICOMs.

Each run is a fresh ``python -m worker.cli process --json`` (one, or several side by side on shards of the archive,
each with its own SQLite database and ``FETALHC_TORCH_THREADS`` = cores / processes), timed from outside: the
wall time, the start-up (until its first row is printed: imports, CUDA, model, gate) and the steady rate (rows
after the first batch over the time they took), so start-up is reported apart rather than hidden. The yardstick
is the bare torch float32 3-flip forward pass of the shipped model on the same device at the same batch size,
timed in this process first (``ratio_to_torch_forward``: steady seconds per scan of one process over it: issue
23's CPU target is at most 0.6). ``compare_cpu`` measures the first files again with ``FETALHC_DEVICE=cpu`` and
reports the HC differences and the decisions that differ.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicom_io.phantom import make_phantom
from dicom_io.writer import build_us_dataset, encode
from worker.core.cpus import available_cpus
from worker.tools.convert_hc18 import scanner_frame

REPO = Path(__file__).resolve().parents[2]
DISTINCT_SCANS = 24  # phantoms encoded once; the archive repeats them under new instance UIDs


def write_scanner_archive(folder: Path, n: int, shards: int = 1) -> list[Path]:
    """``n`` US Image Storage files of 800 x 540 phantom heads (HC 120-320 mm, 0.15 mm pixels) on a scanner's black
    frame with burned-in text and a depth ruler, the picture as the calibrated region, JPEG Baseline YBR_FULL_422
    as scanners write it; spread over ``shards`` sub-folders (``shard-0``...), one per process. Returns the shards."""
    folder.mkdir(parents=True, exist_ok=True)
    pool = []
    for i in range(min(n, DISTINCT_SCANS)):
        image = make_phantom(hc_mm=120 + (37 * i) % 200, seed=i, angle=0.3 + 0.4 * i).image
        frame, bounds = scanner_frame(image, 0.15, f"bench {i}")
        pool.append(encode(build_us_dataset(frame, 0.15, region_bounds=bounds), "jpeg_baseline"))
    dirs = [folder / f"shard-{s}" for s in range(shards)]
    for d in dirs:
        d.mkdir(exist_ok=True)
    for i in range(n):
        ds = pool[i % len(pool)]
        uid = f"2.25.{uuid.uuid4().int}"
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(dirs[i % shards] / f"{i:06d}.dcm", enforce_file_format=True)
    return dirs


def _env(database: Path, device: str, batch_size: int, threads: int, extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "FETALHC_DATABASE_URL": f"sqlite:///{database}", "FETALHC_DEVICE": device,
           "FETALHC_BATCH_SIZE": str(batch_size), "FETALHC_TORCH_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    env.update(extra or {})
    return env


class _Run:
    """One ``fetalhc process --json`` subprocess, its rows and when each arrived."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.started = time.perf_counter()
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "process", "--json", str(folder)],
                                     stdout=subprocess.PIPE, stderr=self._err, env=env, text=True)
        self.rows: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.stderr = ""
        self.unparsed: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        decoder = json.JSONDecoder()
        for line in self.proc.stdout:
            text = line.strip()
            while text.startswith("{"):
                try:
                    row, end = decoder.raw_decode(text)
                except ValueError:
                    self.unparsed.append(text[:200])
                    break
                self.rows.append(row)
                self.times.append(time.perf_counter())
                text = text[end:].strip()

    def wait(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=30)
        self.ended = time.perf_counter()
        self._err.seek(0)
        self.stderr = self._err.read()
        self._err.close()
        return int(self.proc.returncode)


def run_processes(shards: Sequence[Path], device: str, batch_size: int, threads: int, workdir: Path,
                  timeout: float = 900, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """``fetalhc process`` of each shard, all at once (one process each): rows, wall time, start-up, steady rate."""
    runs = [_Run(shard, _env(workdir / f"{shard.name}-{uuid.uuid4().hex[:6]}.db", device, batch_size, threads,
                             extra_env)) for shard in shards]
    codes = [r.wait(timeout) for r in runs]
    start = min(r.started for r in runs)
    end = max(r.ended for r in runs)
    rows = sum(len(r.rows) for r in runs)
    firsts = [r.times[0] for r in runs if r.times]
    lasts = [r.times[-1] for r in runs if r.times]
    # Steady: the rows printed after each process's first batch, over the span in which all of them ran.
    after_first = sum(max(0, len(r.rows) - batch_size) for r in runs)
    span = (max(lasts) - max(r.times[min(batch_size, len(r.times)) - 1] for r in runs if r.times)) if lasts else 0.0
    statuses: dict[str, int] = {}
    for r in runs:
        for row in r.rows:
            statuses[row.get("status") or "?"] = statuses.get(row.get("status") or "?", 0) + 1
    out: dict[str, Any] = {
        "processes": len(shards), "batch_size": batch_size, "torch_threads_each": threads, "device": device,
        "scans": rows, "exit_codes": sorted(set(codes)), "wall_s": round(end - start, 2),
        "startup_s": round(statistics.median(f - r.started for f, r in zip(firsts, runs)), 2) if firsts else None,
        "scans_per_s_overall": round(rows / (end - start), 1) if rows else 0.0,
        "scans_per_s_steady": round(after_first / span, 1) if span > 0 and after_first else None,
        "statuses": statuses,
    }
    if any(c not in (0, 3) for c in codes):
        out["stderr_tail"] = next(r.stderr for r, c in zip(runs, codes) if c not in (0, 3))[-2000:]
    out["_rows"] = [row for r in runs for row in r.rows]
    return out


def _forward_yardstick(device: str, batch_size: int, repeats: int) -> float:
    """Seconds per scan of the bare torch float32 3-flip forward pass of the shipped model at ``batch_size``."""
    from models.evaluation.backend_bench import bench_forward
    from models.segmentation.network import pick_device
    from models.segmentation.weights import cached_model

    dev = pick_device(device)
    model = cached_model(None, str(dev))
    result = bench_forward(model, ["torch"], [batch_size], repeats=repeats, device=dev)[0]
    return float(result.seconds_per_image)


def device_stages(device: str, batch_size: int, repeats: int = 5) -> dict[str, Any]:
    """Milliseconds per scan of each step of one batch of ``batch_size`` archive scans in this process (the device
    synchronised after each): reading (header, frame plan, codestream), decoding onto the device, the forward
    pass alone, the whole device measurement (forward, outlines, fits, gate; ``post`` = the rest), the host's rows,
    and storing them in SQLite. Medians of ``repeats`` after one untimed round."""
    import torch

    from dicom_io.encoded import open_encoded_scans
    from models.plane.device import measure_on_device
    from models.segmentation.device import prepare_on_device
    from models.segmentation.segment import predict_member_logits
    from worker.core.settings import get_settings
    from worker.measure.device_batch import frame_tensor, to_device
    from worker.measure.pipeline import WorkItem, load_context, measure_rows, store_rows

    with tempfile.TemporaryDirectory() as tmp:
        settings = get_settings().replace(device=device, batch_size=batch_size,
                                          database_url=f"sqlite:///{Path(tmp) / 's.db'}")
        from db import upgrade

        upgrade(settings.database_url)
        ctx = load_context(settings)
        paths = sorted(write_scanner_archive(Path(tmp) / "a", batch_size)[0].iterdir())

        def sync() -> None:
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()

        times: dict[str, list[float]] = {k: [] for k in ("read", "decode", "forward", "measure", "rows", "store")}
        for round_ in range(repeats + 1):
            t = time.perf_counter()
            scans = [next(open_encoded_scans(p)[1]) for p in paths]
            t_read = time.perf_counter() - t
            t = time.perf_counter()
            ready = to_device(scans, ctx.device)
            frames = [frame_tensor(s) for s in ready]  # type: ignore[arg-type]
            sync()
            t_decode = time.perf_counter() - t
            t = time.perf_counter()
            batch, _ = prepare_on_device(frames, ctx.model.input_size)
            predict_member_logits(ctx.net, batch)
            sync()
            t_forward = time.perf_counter() - t
            t = time.perf_counter()
            measure_on_device(ctx.net, frames, [s.spacing_mm for s in ready], ctx.model.input_size,  # type: ignore[union-attr]
                              ctx.gate, ctx.classifier)
            sync()
            t_measure = time.perf_counter() - t
            items = [WorkItem(p) for p in paths]
            t = time.perf_counter()
            rows = measure_rows(ctx, items)
            t_rows = time.perf_counter() - t
            t = time.perf_counter()
            store_rows(settings.database_url, items, rows)
            t_store = time.perf_counter() - t
            if round_:
                for key, value in zip(times, (t_read, t_decode, t_forward, t_measure, t_rows, t_store)):
                    times[key].append(value)
    out = {k: round(1000 * statistics.median(v) / batch_size, 3) for k, v in times.items()}
    out["post"] = round(out["measure"] - out["forward"], 3)
    return {"batch_size": batch_size, "device": device, "ms_per_scan": out,
            "note": "rows = measure_rows (read, decode, measure, judge, rows) of the batch; measure includes forward"}


def compare_hc(rows: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """HC and decisions of ``rows`` against ``reference`` (the same files measured another way), by path."""
    ref = {Path(r["path"]).name: r for r in reference}
    diffs, differing = [], []
    for row in rows:
        other = ref.get(Path(row["path"]).name)
        if other is None:
            continue
        if row.get("status") != other.get("status"):
            differing.append({"file": Path(row["path"]).name, "status": row.get("status"),
                              "reference": other.get("status")})
        if row.get("hc_mm") is not None and other.get("hc_mm") is not None:
            diffs.append(abs(float(row["hc_mm"]) - float(other["hc_mm"])))
    return {"compared": sum(Path(r["path"]).name in ref for r in rows), "with_hc": len(diffs),
            "hc_abs_diff_max_mm": round(max(diffs), 4) if diffs else None,
            "hc_abs_diff_mean_mm": round(statistics.fmean(diffs), 4) if diffs else None,
            "statuses_differ": differing}


def bench_process(n: int, processes: Sequence[int] = (1,), batch_size: int = 32, device: str = "cpu",
                  repeats: int = 5, compare_cpu: int = 0, cpus: int | None = None,
                  extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """End to end ``fetalhc process`` of a generated archive of ``n`` scanner-sized JPEG DICOMs, with each count of
    ``processes`` side by side (the archive split between them), at ``batch_size``, on ``device``."""
    if n < 1:
        raise ValueError(f"--process {n}: at least 1 scan")
    cpus = cpus or available_cpus()
    report: dict[str, Any] = {"archive": {"scans": n, "distinct_images": min(n, DISTINCT_SCANS),
                                          "image": "800x540 phantom on a scanner frame, JPEG Baseline YBR_FULL_422"}}
    t0 = time.perf_counter()
    report["torch_forward_s_per_scan"] = round(_forward_yardstick(device, batch_size, repeats), 5)
    report["yardstick"] = (f"bare torch float32 3-flip forward pass, batch {batch_size}, {device}, in this process, "
                           "before and after the runs (ratios: their mean)")
    try:  # the device path's steps: on CPU the pipeline keeps the NumPy path, whose steps --profile shows
        report["stages"] = device_stages(device, batch_size, repeats=3) if device != "cpu" else None
    except Exception as exc:  # noqa: BLE001 - the end-to-end runs below matter more than this breakdown
        report["stages"] = {"error": f"{type(exc).__name__}: {exc}"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = []
        for count in processes:
            folder = root / f"archive-{count}"
            shards = write_scanner_archive(folder, n, count)
            threads = max(1, cpus // count)
            run = run_processes(shards, device, batch_size, threads, root, extra_env=extra_env)
            run.pop("_rows")
            steady = run["scans_per_s_steady"]
            if steady:
                run["s_per_scan_steady"] = round(1 / steady, 5)
            runs.append(run)
            shutil.rmtree(folder, ignore_errors=True)
        report["runs"] = runs
        # The yardstick again after the runs: on a shared machine the load moves; the ratios use the two's mean.
        after = _forward_yardstick(device, batch_size, repeats)
        report["torch_forward_s_per_scan_after"] = round(after, 5)
        yardstick = (report["torch_forward_s_per_scan"] + after) / 2
        for run in runs:
            if run.get("s_per_scan_steady"):
                run["ratio_to_torch_forward"] = round(run["s_per_scan_steady"] / yardstick, 3)
        if compare_cpu and device != "cpu":
            shard = write_scanner_archive(root / "compare", compare_cpu)[0]
            here = run_processes([shard], device, batch_size, cpus, root, extra_env=extra_env)
            cpu = run_processes([shard], "cpu", batch_size, cpus, root,
                                extra_env={**(extra_env or {}), "FETALHC_BACKEND": "torch"})
            report["compare_cpu"] = {**compare_hc(here.pop("_rows"), cpu.pop("_rows")),
                                     "reference": "the same files through FETALHC_DEVICE=cpu FETALHC_BACKEND=torch "
                                                  "(the NumPy path)", "cpu_run": cpu, "device_run": here}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
