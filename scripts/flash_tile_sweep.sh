#!/usr/bin/env bash
# Tile-size sweep of the flash kernels on the device machine: rebuilds only the CUDA objects
# and the attention benchmark per variant (one build dir; the tile macros of
# kernels/flash/traits.h go in through CMAKE_CUDA_FLAGS) and prints the `fused` rows.
# Usage: scripts/flash_tile_sweep.sh "FWD_BLOCKM FWD_BLOCKN FWD_WARPS BWD_BLOCKN" ...
#   e.g. scripts/flash_tile_sweep.sh "128 64 4 128" "128 64 8 128" "64 64 4 64"
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-build-gpu/out}
mkdir -p "$out"
b=${GPU_BUILD_DIR:-/tmp/sluice-build}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
for v in "$@"; do
  set -- $v
  flags="-DSLUICE_FWD_BLOCKM=$1 -DSLUICE_FWD_BLOCKN=$2 -DSLUICE_FWD_WARPS=$3 -DSLUICE_BWD_BLOCKN=$4"
  tag="fwd_${1}x${2}w${3}_bwd_n${4}"
  t0=$(date +%s)
  cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CUDA_FLAGS=$flags" > "$out/configure_$tag.log" 2>&1 || { tail -20 "$out/configure_$tag.log"; exit 1; }
  cmake --build "$b" --target bench_attention > "$out/build_$tag.log" 2>&1 || { grep -E "error|FAILED" "$out/build_$tag.log" | head -20; exit 1; }
  "$b/benchmarks/bench_attention" --out "$out/bench_$tag.json" > "$out/bench_$tag.log" 2>&1
  echo "== $tag (build $(( $(date +%s) - t0 ))s)"
  grep -E "fused  " "$out/bench_$tag.log"
done
grep -E "sdpa_flash" "$out/bench_$tag.log"
