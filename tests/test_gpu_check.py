"""deploy/gpu-check.sh: stops clearly without CUDA; the bench command it runs parses."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from worker.cli import build_parser

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "gpu-check.sh"


def test_without_cuda_it_stops_before_measuring(tmp_path: Path) -> None:
    fake_python = tmp_path / "python"  # answers that torch sees no CUDA device
    fake_python.write_text("#!/bin/sh\nexit 1\n")
    fake_python.chmod(0o755)
    env = {**os.environ, "GPU_CHECK_FETALHC": str(Path(sys.executable).with_name("fetalhc")),
           "GPU_CHECK_PYTHON": str(fake_python)}
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 3 and "no CUDA device" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_bench_command_it_runs_parses() -> None:
    line = next(ln for ln in SCRIPT.read_text().splitlines() if '"$FETALHC" bench' in ln)
    argv = shlex.split(line.split('"$FETALHC"', 1)[1].replace('"${amp[@]}"', "--amp").replace("\\", ""))
    argv += ["--out", "x.json"]
    args = build_parser().parse_args(argv)
    assert (args.device, args.backends, args.batch_sizes, args.celery_batch, args.amp) == (
        "cuda", "torch", "8,32", True, True)
    assert re.search(r"--out \"\$OUT_DIR/bench-cuda-\$mode.json\"", SCRIPT.read_text())
