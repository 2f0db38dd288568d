#!/usr/bin/env bash
# Tile-size sweep of the flash kernels on the device machine: rebuilds only the CUDA objects
# and the attention benchmark per variant (one build dir; the tile macros of
# kernels/flash/traits.h go in through CMAKE_CUDA_FLAGS) and prints the `fused` rows.
# Usage: scripts/flash_tile_sweep.sh "FWD_BLOCKM FWD_BLOCKN FWD_WARPS BWD_BLOCKN [BWD_BLOCKM_HD64 [FWD_MIN_BLOCKS]]" ...
#   e.g. scripts/flash_tile_sweep.sh "128 64 4 128" "128 64 8 128" "64 64 4 64" "128 64 4 128 128"
# BWD_BLOCKM_HD64 (default 64) is the backward's query tile at head dim 64 (128 keeps 64); 128
# is what flash-attention 2 uses there (statically: 8% fewer instructions per unit of work, 23
# local-memory accesses per iteration from spills). FWD_MIN_BLOCKS (default: traits.h's, 4 for
# the 64x64 tile, else 0) is the forward's __launch_bounds__ blocks per SM; 0 leaves ptxas free.
# The fields apply to both head dims: read each shape off the variant meant for its head dim.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
for v in "$@"; do
  set -- $v
  flags="-DSLUICE_FWD_BLOCKM=$1 -DSLUICE_FWD_BLOCKN=$2 -DSLUICE_FWD_WARPS=$3 -DSLUICE_BWD_BLOCKN=$4 -DSLUICE_BWD_BLOCKM_HD64=${5:-64}${6:+ -DSLUICE_FWD_MIN_BLOCKS=$6}"
  tag="fwd_${1}x${2}w${3}${6:+b$6}_bwd_n${4}m${5:-64}"
  t0=$(date +%s)
  gpu_build "_$tag" "-DCMAKE_CUDA_FLAGS=$flags" -- bench_attention || exit 1
  "$b/benchmarks/bench_attention" --bars --out "$out/bench_$tag.json" > "$out/bench_$tag.log" 2>&1
  echo "== $tag (build $(( $(date +%s) - t0 ))s)"
  grep -E "fused  " "$out/bench_$tag.log"
done
grep -E "sdpa_flash" "$out/bench_$tag.log"
