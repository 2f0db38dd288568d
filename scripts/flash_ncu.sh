#!/usr/bin/env bash
# Nsight Compute profile of the flash kernels on the device machine: builds bench_attention,
# runs one shape of it (--warmup 0 --iters 1) under ncu, keeping the launches whose function
# names match KERNELS (default: Sluice's forward/backward and PyTorch's flash backward), at most
# LAUNCHES (default 12; in bench order: fused fwd, fwd+bwd, ..., SDPA flash, then G1-gated).
# Usage: scripts/flash_ncu.sh [SHAPE_INDEX (0-2, default 0)] [NCU_SET (default full)]
# Writes to $out: flash_SHAPE_details.txt (details page), flash_SHAPE_raw.csv.gz (every metric,
# one row per launch, e.g. the warp stall reasons), flash_SHAPE_sass.csv.gz (per-instruction
# source counters, if this ncu can print them); the .ncu-rep itself is usually too big to fetch.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
shape=${1:-0}
set_name=${2:-full}
kernels=${KERNELS:-"regex:sluice.*flash_(fwd|bwd)_kernel|flash_bwd_dq_dk_dv"}
gpu_build "" -- bench_attention || exit 1
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
rep="$out/flash_$shape.ncu-rep"
"$ncu" --set "$set_name" --import-source yes --kernel-name-base demangled -k "$kernels" \
  --launch-count "${LAUNCHES:-12}" -f -o "$rep" "$b/benchmarks/bench_attention" --shape "$shape" --warmup 0 --iters 1 \
  > "$out/ncu_run_$shape.log" 2>&1
echo "[ncu] rc=$?"; grep -E "==PROF== Profiling|==ERROR==|==WARNING==" "$out/ncu_run_$shape.log" | cut -c1-160 | head -20
"$ncu" --import "$rep" --page details > "$out/flash_${shape}_details.txt" 2>&1
"$ncu" --import "$rep" --page raw --csv 2>&1 | gzip > "$out/flash_${shape}_raw.csv.gz"
"$ncu" --import "$rep" --page source --csv --print-source sass 2>&1 | gzip > "$out/flash_${shape}_sass.csv.gz"
ls -la "$out"/flash_"$shape"*
