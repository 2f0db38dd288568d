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
gpu_ab_bench ep_e1 "$cfg" --expert-parallel plain ep1   # bar: ep1 costs <= 2%
