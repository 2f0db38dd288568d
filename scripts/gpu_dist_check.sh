#!/usr/bin/env bash
# Device-machine check for data parallelism (one GPU: NCCL with world size 1, the only NCCL run
# one GPU allows): builds sluice and the throughput benchmark only, runs the 125M config's steps
# without a process group and through a one-rank NCCL group (c10d Reducer, one 25 MiB bucket
# after another), alternating twice to see the noise, then a 20-step `sluice launch --nproc 1`
# run on a shared public-domain text (byte tokens) to exercise the trainer's NCCL path end to end.
# Bar (issue 19): world size 1 costs < 2% against no process group.
# Stage first: ../shared/device/stage.sh libgloo-dev   (then carry .device)
# Usage: source .device/gpu-env.sh; bash scripts/gpu_dist_check.sh      (about 4 minutes)
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
t0=$(date +%s)
gpu_build "" -- sluice bench_train_throughput || exit 1
echo "[gpu] build $(( $(date +%s) - t0 ))s"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
cfg=benchmarks/configs/llama_125m.yaml
gpu_ab_bench dist_ws1 "$cfg" --process-group none nccl   # bar: nccl costs < 2%
# The trainer end to end over NCCL (one rank): byte tokens on a shared text, 20 steps.
text=../shared/data/pretrain/gutenberg_train_00.txt
[ -f "$text" ] || text=README.md
"$b/sluice" launch --nproc 1 -- train configs/tiny.yaml --set data.train="$text" --set data.tokenizer=byte \
  --set train.steps=20 --set train.log_every=5 --set train.eval_every=0 --set train.device=cuda \
  --run-dir "$out/launch_nccl" > "$out/launch_nccl.log" 2>&1
echo "[dist] sluice launch --nproc 1 over NCCL: rc=$?"; grep -E "distributed|step 20|error" "$out/launch_nccl.log" | head -5
