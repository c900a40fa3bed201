"""deploy/gpu-check.sh: stops clearly without CUDA; the bench commands it runs parse; its dry run writes the JSON."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from worker.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "gpu-check.sh"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    fake_python = tmp_path / "python"  # answers that torch sees no CUDA device
    fake_python.write_text("#!/bin/sh\nexit 1\n")
    fake_python.chmod(0o755)
    return {**os.environ, "GPU_CHECK_FETALHC": f"{sys.executable} -m worker.cli", "GPU_CHECK_PYTHON": str(fake_python),
            **extra}


def test_without_cuda_it_stops_before_measuring(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=_env(tmp_path), capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 3 and "no CUDA device" in done.stderr
    assert not (tmp_path / "out").exists()


def _bench_lines() -> list[list[str]]:
    lines = [ln for ln in SCRIPT.read_text().splitlines() if '"${FETALHC[@]}" bench' in ln]
    argvs = []
    for line in lines:
        text = line.split('"${FETALHC[@]}"', 1)[1].replace('"${amp[@]}"', "--amp").replace("\\", "")
        script = SCRIPT.read_text().splitlines()
        at = script.index(line)
        if line.rstrip().endswith("\\"):  # the command goes on on the next line
            text += " " + script[at + 1].strip()
        values = {"$DEVICE": "cuda", "$SCANS": "2048", "$WORKERS": "1,2,4,8", "$batch": "32", "$compare": "64",
                  "$PIPELINE_SCANS": "64", "$OUT_DIR/process-b$batch.json": "o.json",
                  "$OUT_DIR/bench-$DEVICE-$mode.json": "b.json"}
        argv = shlex.split(text.split(">", 1)[0])
        argvs.append([values.get(a, a) for a in argv])
    return argvs


def test_the_bench_commands_it_runs_parse() -> None:
    process, bench = _bench_lines()
    args = build_parser().parse_args(process)
    assert (args.device, args.process, args.process_workers, args.process_batch, args.compare_cpu) == (
        "cuda", 2048, "1,2,4,8", 32, 64)
    args = build_parser().parse_args(bench)
    assert (args.device, args.backends, args.batch_sizes, args.amp) == ("cuda", "torch", "8,32", True)


def test_a_dry_run_on_the_cpu_writes_the_end_to_end_report(tmp_path: Path) -> None:
    env = _env(tmp_path, GPU_CHECK_DRY_RUN="1", GPU_CHECK_SCANS="6", GPU_CHECK_WORKERS="1,2", GPU_CHECK_BATCHES="4",
               FETALHC_HEAD_PLANE_GATE="off", GPU_CHECK_FORWARD="0")
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          check=False, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "process-b4.json").read_text())["process"]
    runs = {run["processes"]: run for run in report["runs"]}
    assert set(runs) == {1, 2} and all(run["scans"] == 6 and run["exit_codes"] == [0] for run in runs.values())
    assert report["torch_forward_s_per_scan"] > 0 and runs[1]["startup_s"] > 0
