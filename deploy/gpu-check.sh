#!/usr/bin/env bash
# GPU node check (issues 14 and 23). Writes JSON documents into OUT_DIR (default ./gpu-check):
#   process-b<B>.json  end to end: `fetalhc process` of a generated archive of scanner-sized JPEG DICOMs, one process
#                      and several side by side at batch B (start-up apart, steady scans/s), the bare torch 3-flip
#                      forward pass as yardstick, and (first batch size) 64 files measured on the GPU and on the
#                      CPU (FETALHC_DEVICE=cpu): HC differences and differing decisions;
#   bench-cuda-<mode>.json  the bare forward pass against the in-process pipeline at batch 1/8/32, float32 and
#                      bf16 autocast (fetalhc bench --backends torch).
# Stops at once with exit status 3 where there is no CUDA device; GPU_CHECK_DRY_RUN=1 runs the same steps on the
# CPU with a few scans instead (to try the script on a machine without a GPU).
#
#   deploy/gpu-check.sh [OUT_DIR]
#   GPU_CHECK_FETALHC="python3 -m worker.cli"  the command to run (default: fetalhc)
#   GPU_CHECK_SCANS=2048 GPU_CHECK_WORKERS=1,2,4,8 GPU_CHECK_BATCHES=32,64  archive size, processes, batch sizes
#   GPU_CHECK_FORWARD=0  skip the bench-cuda-*.json part; GPU_CHECK_MODES="fp32"  its float32 run alone
set -euo pipefail

OUT_DIR="${1:-gpu-check}"
read -r -a FETALHC <<< "${GPU_CHECK_FETALHC:-fetalhc}"
PY="${GPU_CHECK_PYTHON:-python}"
SCANS="${GPU_CHECK_SCANS:-2048}"
WORKERS="${GPU_CHECK_WORKERS:-1,2,4,8}"
BATCHES="${GPU_CHECK_BATCHES:-32,64}"
DEVICE=cuda
PIPELINE_SCANS=64
command -v "${FETALHC[0]}" >/dev/null || { echo "gpu-check: '${FETALHC[0]}' not found (set GPU_CHECK_FETALHC)" >&2; exit 2; }
if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
    DEVICE=cpu SCANS="${GPU_CHECK_SCANS:-24}" WORKERS="${GPU_CHECK_WORKERS:-1,2}" BATCHES="${GPU_CHECK_BATCHES:-8}"
    PIPELINE_SCANS=4
    echo "gpu-check: dry run on the CPU ($SCANS scans, processes $WORKERS, batch $BATCHES)" >&2
elif ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-check: no CUDA device is available here (torch.cuda.is_available() is False, or torch is missing" \
         "from '$PY'); run this on a GPU node with a CUDA build of torch" >&2
    exit 3
fi
mkdir -p "$OUT_DIR"
export FETALHC_DEVICE="$DEVICE" FETALHC_BACKEND=torch   # exported backends are CPU-only
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/nvidia-smi.csv" 2>/dev/null || true

compare=64
for batch in ${BATCHES//,/ }; do
    [ "$DEVICE" = cpu ] && compare=0
    "${FETALHC[@]}" bench --device "$DEVICE" --process "$SCANS" --process-workers "$WORKERS" --process-batch "$batch" \
        --compare-cpu "$compare" --repeats 5 --out "$OUT_DIR/process-b$batch.json" > /dev/null
    echo "gpu-check: wrote $OUT_DIR/process-b$batch.json"
    compare=0
done
[ "${GPU_CHECK_FORWARD:-1}" = 1 ] || exit 0   # GPU_CHECK_FORWARD=0: the end-to-end runs only
for mode in ${GPU_CHECK_MODES:-fp32 amp}; do
    amp=(); [ "$mode" = amp ] && amp=(--amp)
    "${FETALHC[@]}" bench --device "$DEVICE" --backends torch --batch-sizes 8,32 -n "$PIPELINE_SCANS" --repeats 5 "${amp[@]}" \
        --out "$OUT_DIR/bench-$DEVICE-$mode.json" > /dev/null
    echo "gpu-check: wrote $OUT_DIR/bench-$DEVICE-$mode.json"
done
