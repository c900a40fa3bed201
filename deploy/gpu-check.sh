#!/usr/bin/env bash
# GPU node check: bare forward pass against the whole pipeline at batch 1/8/32 in float32 and under
# bf16 autocast, and the batched Celery path (fetalhc.measure_batch) end to end in eager mode (no Redis).
# Writes one JSON document per run into OUT_DIR (default ./gpu-check) and stops at once without CUDA.
#
#   deploy/gpu-check.sh [OUT_DIR]          # GPU_CHECK_FETALHC=/path/to/fetalhc to use another install
set -euo pipefail

OUT_DIR="${1:-gpu-check}"
FETALHC="${GPU_CHECK_FETALHC:-fetalhc}"
PY="${GPU_CHECK_PYTHON:-python}"
command -v "$FETALHC" >/dev/null || { echo "gpu-check: '$FETALHC' not found (set GPU_CHECK_FETALHC)" >&2; exit 2; }
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-check: no CUDA device is available here (torch.cuda.is_available() is False, or torch is missing" \
         "from '$PY'); run this on a GPU node with a CUDA build of torch" >&2
    exit 3
fi
mkdir -p "$OUT_DIR"
export FETALHC_DEVICE=cuda FETALHC_BACKEND=torch   # exported backends are CPU-only
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/nvidia-smi.csv" 2>/dev/null || true

for mode in fp32 amp; do
    amp=(); [ "$mode" = amp ] && amp=(--amp)
    "$FETALHC" bench --device cuda --backends torch --batch-sizes 8,32 -n 64 --repeats 10 --celery-batch "${amp[@]}" \
        --out "$OUT_DIR/bench-cuda-$mode.json" > /dev/null
    echo "gpu-check: wrote $OUT_DIR/bench-cuda-$mode.json"
done
