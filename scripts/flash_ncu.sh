#!/usr/bin/env bash
# Nsight Compute profile of the flash kernels on the device machine: builds bench_attention,
# runs one shape of it (--warmup 0 --iters 1) under ncu and keeps the forward and backward
# kernel launches (ungated fwd, fwd inside fwd+bwd, bwd, ..., then the G1-gated ones).
# Usage: scripts/flash_ncu.sh [SHAPE_INDEX (0-2, default 0)] [NCU_SET (default full)]
# Writes $out/flash_SHAPE.ncu-rep and the text of its details page, flash_SHAPE_details.txt.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
shape=${1:-0}
set_name=${2:-full}
gpu_build "" -- bench_attention || exit 1
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
"$ncu" --set "$set_name" --import-source yes -k "regex:flash_(fwd|bwd)_kernel" --launch-count 7 \
  -f -o "$out/flash_$shape" "$b/benchmarks/bench_attention" --shape "$shape" --warmup 0 --iters 1 \
  > "$out/ncu_run_$shape.log" 2>&1
echo "[ncu] rc=$?"; grep -E "==PROF==|==ERROR==|==WARNING==" "$out/ncu_run_$shape.log" | head -20
"$ncu" --import "$out/flash_$shape.ncu-rep" --page details > "$out/flash_${shape}_details.txt" 2>&1
echo "[ncu] details: $(wc -l < "$out/flash_${shape}_details.txt") lines"
