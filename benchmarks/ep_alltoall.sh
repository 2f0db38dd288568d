#!/usr/bin/env bash
# Expert parallelism's token exchange on this machine: configs/moe_tiny.yaml (4 MoE layers of 8
# experts, top-2, d_model 128, shared expert) on 2 Gloo ranks x 1 thread over loopback, once
# with parallel.expert_parallel: 2 (each rank holds 4 experts; tokens cross by all-to-all) and
# once as plain data parallelism (every rank holds all 8), at the same per-rank batch.
#   benchmarks/ep_alltoall.sh [STEPS]         (default 40; ~3 minutes on 2 cores)
# Reports, from metrics.jsonl (records after the first, which holds the warm-up): bytes each rank
# sends to the other per step (all MoE layers, forward and backward, the count exchanges
# included) and per MoE layer, the share of wall time spent inside the all-to-alls (waiting for
# the other rank included), and tokens/s of both runs. Results: build/bench-dist/ep_alltoall.json
# Napkin math: a rank routes 16 x 128 = 2048 tokens x top-2 = 4096 rows of 128 fp32 (512 B); with
# balanced routing half go to the other rank: 1.05 MB per all-to-all, four per layer and step
# (dispatch and return, forward and backward) = 4.2 MB per layer, 16.8 MB per step for 4 layers.
source "$(dirname "${BASH_SOURCE[0]}")/dist_common.sh"
bench_args configs/moe_tiny.yaml
rm -rf "$work/ep2" "$work/dp2"
"$sluice" launch --nproc 2 -- train "${common[@]}" --set parallel.expert_parallel=2 --run-dir "$work/ep2"
"$sluice" launch --nproc 2 -- train "${common[@]}" --run-dir "$work/dp2"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def recs(run):
    return [json.loads(l) for l in open(f"{work}/{run}/metrics.jsonl") if l.strip()][1:]
def mean(run, key):
    v = [r[key] for r in recs(run)]
    return sum(v) / len(v)
layers = 4
mb = mean("ep2", "ep_alltoall_mb_per_step")
result = {"config": "configs/moe_tiny.yaml", "ranks": 2, "threads_per_rank": 1, "per_rank_batch": "16 x 128",
          "alltoall_mb_per_step": mb, "alltoall_mb_per_moe_layer_and_step": mb / layers,
          "alltoall_share_of_step": mean("ep2", "ep_alltoall_share"),
          "tokens_per_s_expert_parallel": mean("ep2", "tokens_per_s"),
          "tokens_per_s_data_parallel": mean("dp2", "tokens_per_s")}
json.dump(result, open(f"{work}/ep_alltoall.json", "w"), indent=2)
print(f"EP 2 on 2 Gloo ranks: {mb:.2f} MB sent per rank and step ({mb / layers:.2f} MB per MoE layer), "
      f"{100 * result['alltoall_share_of_step']:.1f}% of the step inside the all-to-alls; tokens/s EP 2 "
      f"{result['tokens_per_s_expert_parallel']:.0f} vs DP 2 {result['tokens_per_s_data_parallel']:.0f}")
PY
