# Sourced by the device-machine scripts (gpu_check.sh, gpu_flash_check.sh, flash_tile_sweep.sh):
# the project root as working directory, $out for results ($OUT when set, else build-gpu/out),
# $b the build directory ($GPU_BUILD_DIR, else /tmp/sluice-build), Hopper kernels unless
# TORCH_CUDA_ARCH_LIST says otherwise, and gpu_build.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-build-gpu/out}
mkdir -p "$out"
b=${GPU_BUILD_DIR:-/tmp/sluice-build}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}

# gpu_build TAG [CMAKE_ARG...] [-- TARGET...]: configure (Release, Ninja) and build the targets
# (all without any), logs in $out/configureTAG.log and $out/buildTAG.log; on failure prints the
# errors and returns 1.
gpu_build() {
  local tag=$1
  shift
  local cmake_args=() targets=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cmake_args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  for t in "$@"; do targets+=(--target "$t"); done
  cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" > "$out/configure$tag.log" 2>&1 ||
    { tail -30 "$out/configure$tag.log"; return 1; }
  cmake --build "$b" "${targets[@]}" > "$out/build$tag.log" 2>&1 ||
    { grep -E "error|FAILED" "$out/build$tag.log" | head -40; return 1; }
}

# gpu_ab_bench TAG CONFIG FLAG MODE_A MODE_B: bench_train_throughput on CONFIG without FLAG
# (MODE_A) and with it (MODE_B), alternating, two rounds of 5 warm-up + 20 timed steps each;
# results in $out/TAG_MODE_ROUND.json, the best of each and B's cost against A in $out/TAG.json.
gpu_ab_bench() {
  local tag=$1 cfg=$2 flag=$3 a=$4 bb=$5
  for round in 1 2; do
    for mode in "$a" "$bb"; do
      local extra=(); [ "$mode" = "$bb" ] && extra=("$flag")
      "$b/benchmarks/bench_train_throughput" "$cfg" "${extra[@]}" --warmup 5 --steps 20 \
        --out "$out/${tag}_${mode}_$round.json" > "$out/${tag}_${mode}_$round.log" 2>&1
      echo "[bench] $tag $mode round $round: $(grep -E '"tokens_per_s"|"ep_alltoall_share"' "$out/${tag}_${mode}_$round.json" | tr -d '\n ')"
      grep -E "error" "$out/${tag}_${mode}_$round.log" | head -3
    done
  done
  python3 - "$out" "$tag" "$a" "$bb" <<'PY'
import json, sys, glob
out, tag, a, b = sys.argv[1:5]
tps = {m: [json.load(open(f))["tokens_per_s"] for f in sorted(glob.glob(f"{out}/{tag}_{m}_*.json"))] for m in (a, b)}
best = {m: max(v) for m, v in tps.items() if v}
if len(best) == 2:
    cost = 1 - best[b] / best[a]
    print(f"[{tag}] tokens/s {a} {tps[a]} {b} {tps[b]}: {b} costs {100*cost:.2f}% against {a}")
    json.dump({"tokens_per_s": tps, "cost": cost}, open(f"{out}/{tag}.json", "w"), indent=2)
PY
}
