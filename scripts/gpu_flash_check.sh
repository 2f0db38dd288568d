#!/usr/bin/env bash
# Flash-attention kernel loop on the device machine: build only the kernel test and benchmark,
# run the GPU tests (optionally a filter), the benchmark, and compute-sanitizer on a small case.
# Usage: scripts/gpu_flash_check.sh [--filter GTEST_FILTER] [--no-bench] [--sanitize] [--orders "plain sectioned"]
#                                   [--bwd-tiles "64x64 32x64"]
# --orders: benchmark once per SLUICE_FLASH_TILE_ORDER (kernels/flash/tile_order.h), same build.
# --bwd-tiles: then the bars' rows (--bars) once per forced backward tile (SLUICE_FLASH_BWD_TILE,
# kernels/flash/bwd_tiles.h; a tile a head dim lacks or the device cannot hold makes that row
# unavailable), e.g. the two-blocks-per-SM tiles against the default.
# Results (logs, JSON) go to $OUT when set, else build-gpu/out.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
filter='*'; bench=1; sanitize=0; orders=plain; bwd_tiles=
while [ $# -gt 0 ]; do
  case "$1" in
    --filter) filter=$2; shift 2 ;;
    --no-bench) bench=0; shift ;;
    --sanitize) sanitize=1; shift ;;
    --orders) orders=$2; shift 2 ;;
    --bwd-tiles) bwd_tiles=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
t0=$(date +%s)
gpu_build "" -- test_flash_attention bench_attention || exit 1
echo "[gpu] build $(( $(date +%s) - t0 ))s"
grep -E "registers|spill" "$out/build.log" | head -20
"$b/tests/test_flash_attention" --gtest_filter="$filter" > "$out/test_flash.log" 2>&1; echo "[gpu] test_flash_attention rc=$?"
grep -E "^\[  (PASSED|FAILED) |FAILED  \]|tests ran" "$out/test_flash.log" | head -30
if [ $sanitize = 1 ]; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 1 "$b/tests/test_flash_attention" \
      --gtest_filter="${SANITIZE_FILTER:-Training/FlashAttention.*/1:Decode/*/1}" > "$out/sanitize_$tool.log" 2>&1
    echo "[gpu] compute-sanitizer $tool rc=$? $(grep -E 'ERROR SUMMARY' "$out/sanitize_$tool.log" | head -1)"
  done
fi
if [ $bench = 1 ]; then
  for order in $orders; do
    suffix=$([ "$order" = plain ] || echo "_$order")
    SLUICE_FLASH_TILE_ORDER=$order "$b/benchmarks/bench_attention" --out "$out/bench_attention$suffix.json" \
      > "$out/bench_attention$suffix.log" 2>&1; echo "[bench] attention ($order order) rc=$?"
    grep -vE "^$" "$out/bench_attention$suffix.log" | head -30
  done
  for tile in $bwd_tiles; do
    SLUICE_FLASH_BWD_TILE=$tile "$b/benchmarks/bench_attention" --bars --out "$out/bench_attention_tile_$tile.json" \
      > "$out/bench_attention_tile_$tile.log" 2>&1; echo "[bench] attention (backward tile $tile) rc=$?"
    grep -E "fused|sdpa_flash" "$out/bench_attention_tile_$tile.log" | head -12
  done
fi
