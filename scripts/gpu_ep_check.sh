#!/usr/bin/env bash
# Device-machine check for expert parallelism (one GPU: the expert-parallel code path with one
# rank, every MoE layer's tokens through the all-to-all dispatcher over a one-rank NCCL group,
# the dense and expert reducers, the split optimizer): builds the throughput benchmark only and
# runs the MoE issue's config (benchmarks/configs/moe_8x_top2.yaml, 198k tokens/s on the H100)
# plain and through that path, alternating twice to see the noise.
# Bar (issue 20): the expert-parallel path with E = 1 costs at most 2%.
# Stage first: ../shared/device/stage.sh libgloo-dev   (then carry .device)
# Usage: source .device/gpu-env.sh; bash scripts/gpu_ep_check.sh      (about 4 minutes)
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
t0=$(date +%s)
gpu_build "" -- bench_train_throughput || exit 1
echo "[gpu] build $(( $(date +%s) - t0 ))s"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
cfg=benchmarks/configs/moe_8x_top2.yaml
for round in 1 2; do
  for mode in plain ep1; do
    flag=(); [ $mode = ep1 ] && flag=(--expert-parallel)
    "$b/benchmarks/bench_train_throughput" "$cfg" "${flag[@]}" --warmup 5 --steps 20 \
      --out "$out/ep_${mode}_$round.json" > "$out/ep_${mode}_$round.log" 2>&1
    echo "[bench] $mode round $round: $(grep -E '"tokens_per_s"|"ep_alltoall_share"' "$out/ep_${mode}_$round.json" | tr -d '\n ')"
    grep -E "error" "$out/ep_${mode}_$round.log" | head -3
  done
done
python3 - "$out" <<'PY'
import json, sys, glob
out = sys.argv[1]
tps = {m: [json.load(open(f))["tokens_per_s"] for f in sorted(glob.glob(f"{out}/ep_{m}_*.json"))] for m in ("plain", "ep1")}
best = {m: max(v) for m, v in tps.items() if v}
if len(best) == 2:
    cost = 1 - best["ep1"] / best["plain"]
    print(f"[ep] tokens/s plain {tps['plain']} expert-parallel path {tps['ep1']}: E = 1 costs {100*cost:.2f}% (bar <= 2%)")
    json.dump({"tokens_per_s": tps, "cost": cost}, open(f"{out}/ep_e1.json", "w"), indent=2)
PY
