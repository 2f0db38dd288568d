#!/usr/bin/env bash
# A/B benchmark of kernel variants on the device machine in one call: each argument is a folder
# holding a complete copy of kernels/flash (e.g. `git archive BRANCH kernels/flash`); per
# variant, copy it over kernels/flash, rebuild only what changed (one build dir) and run the
# attention benchmark. The working tree's own kernels/flash is restored at the end.
# Usage: scripts/flash_variants.sh DIR... ; DEADLINE_S (default 540) stops before the call limit.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
deadline=$(( $(date +%s) + ${DEADLINE_S:-540} ))
saved=$(mktemp -d)
cp -r kernels/flash/. "$saved/"
for dir in "$@"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "[variants] deadline reached before $dir"; break; fi
  name=$(basename "$dir")
  rm -rf kernels/flash && mkdir -p kernels/flash && cp -r "$dir"/. kernels/flash/
  t0=$(date +%s)
  gpu_build "_$name" -- bench_attention || continue
  "$b/benchmarks/bench_attention" --bars --out "$out/bench_$name.json" > "$out/bench_$name.log" 2>&1
  echo "== $name (build+bench $(( $(date +%s) - t0 ))s)"
  grep -E "fused|sdpa_flash" "$out/bench_$name.log"
done
rm -rf kernels/flash && mkdir -p kernels/flash && cp -r "$saved"/. kernels/flash/
