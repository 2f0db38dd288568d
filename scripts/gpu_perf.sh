#!/usr/bin/env bash
# Issue 23's one GPU call (at most 8 minutes, build included): the GPU tests of the fused
# kernels (RMSNorm, elementwise, flash attention; compute-sanitizer memcheck on the small
# cases), bench_attention and bench_elementwise, bench_train_throughput on the 125M, 125M-G1,
# 360M-G1 and MoE configs across attention backends and the memory/speed options, and the
# PyTorch reference (eager and torch.compile) on the same GPU; everything into $out/perf.json.
#   ../shared/device/stage.sh        # here, once: .device/ with the Debian packages
#   run: source .device/gpu-env.sh; bash scripts/gpu_perf.sh     (carry .device)
# Budget (H100/H200, 16 cores): build of these targets for sm_90a only ~3 min; tests ~1 min;
# 16 sluice benchmark runs of 3 warm-up + 10 timed steps ~2.5 min; 6 PyTorch runs ~1.5 min
# (compile ~40 s each). STEPS / WARMUP override the step counts; QUICK=1 skips the sanitizer.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
steps=${STEPS:-10}
warmup=${WARMUP:-3}
t0=$(date +%s)
gpu_build "" -- test_gpu test_flash_attention test_rms_norm_gpu test_gate_mul_gpu bench_attention bench_elementwise \
  bench_train_throughput || exit 1
echo "[perf] build $(( $(date +%s) - t0 ))s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
for t in test_rms_norm_gpu test_gate_mul_gpu test_gpu test_flash_attention; do
  timeout 120 "$b/tests/$t" --gtest_brief=1 > "$out/$t.log" 2>&1; echo "[perf] $t rc=$? $(tail -1 "$out/$t.log")"
done
if [ "${QUICK:-0}" != 1 ] && command -v compute-sanitizer > /dev/null; then
  # memcheck on the small cases only: it slows kernels by 10-100x
  timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$b/tests/test_rms_norm_gpu" --gtest_brief=1 \
    > "$out/memcheck_rms_norm.log" 2>&1; echo "[perf] memcheck rms_norm rc=$?"
  timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$b/tests/test_flash_attention" --gtest_brief=1 \
    --gtest_filter='FlashAttentionGate.*:FlashAttentionBounds.*:FlashAttentionSoftmax.*' > "$out/memcheck_flash.log" 2>&1; echo "[perf] memcheck flash rc=$?"
fi
"$b/benchmarks/bench_attention" --out "$out/bench_attention.json" > "$out/bench_attention.log" 2>&1
echo "[perf] bench_attention rc=$?"
"$b/benchmarks/bench_elementwise" --out "$out/bench_elementwise.json" > "$out/bench_elementwise.log" 2>&1
echo "[perf] bench_elementwise rc=$?"
# name|config|overrides (space separated)
runs=(
  "125m_sdpa|llama_125m|"
  "125m_fused|llama_125m|model.attention.backend=fused"
  "125m_fused_proj|llama_125m|model.fused_projections=true"
  "125m_elementwise_fused|llama_125m|model.elementwise_kernels=fused"
  "125m_chunked|llama_125m|train.loss_chunk_tokens=4096"
  "125m_selective|llama_125m|train.activation_checkpointing=selective train.loss_chunk_tokens=4096"
  "125m_full|llama_125m|train.activation_checkpointing=full train.loss_chunk_tokens=4096"
  "125m_g1_sdpa|llama_125m_g1|"
  "125m_g1_fused|llama_125m_g1|model.attention.backend=fused"
  "125m_g1_elementwise_fused|llama_125m_g1|model.elementwise_kernels=fused"
  "125m_g1_fused_all|llama_125m_g1|model.attention.backend=fused model.fused_projections=true train.loss_chunk_tokens=4096"
  "360m_g1_sdpa|llama_360m_g1|"
  "360m_g1_fused|llama_360m_g1|model.attention.backend=fused"
  "360m_g1_fused_all|llama_360m_g1|model.attention.backend=fused model.fused_projections=true train.loss_chunk_tokens=4096"
  "moe_sdpa|moe_8x_top2|"
  "moe_fused|moe_8x_top2|model.attention.backend=fused"
)
for r in "${runs[@]}"; do
  IFS='|' read -r name cfg sets <<< "$r"
  args=()
  for s in $sets; do args+=(--set "$s"); done
  timeout 150 "$b/benchmarks/bench_train_throughput" "benchmarks/configs/$cfg.yaml" "${args[@]}" --warmup "$warmup" \
    --steps "$steps" --out "$out/train_$name.json" > "$out/train_$name.log" 2>&1
  echo "[perf] $name rc=$? $(grep -E '"tokens_per_s"|"peak_memory_gib"' "$out/train_$name.json" 2>/dev/null | tr -d '\n ')"
done
for m in "125m|" "125m|--gate" "360m|--gate"; do
  IFS='|' read -r model gate <<< "$m"
  for c in "" --compile; do
    name="torch_${model}${gate:+_g1}${c:+_compile}"
    timeout 150 python3 benchmarks/pytorch_reference.py --model "$model" $gate $c --warmup "$warmup" --steps "$steps" \
      --out "$out/$name.json" > "$out/$name.log" 2>&1
    echo "[perf] $name rc=$? $(tail -1 "$out/$name.log" | cut -c1-160)"
  done
done
python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
result = {}
for f in sorted(glob.glob(f"{out}/train_*.json") + glob.glob(f"{out}/torch_*.json") + glob.glob(f"{out}/bench_*.json")):
    try:
        result[os.path.basename(f)[:-5]] = json.load(open(f))
    except ValueError as e:
        result[os.path.basename(f)[:-5]] = {"error": str(e)}
for f in sorted(glob.glob(f"{out}/*.log")):
    if os.path.basename(f).startswith(("test_", "memcheck_")):
        result[os.path.basename(f)[:-4]] = open(f).read()[-2000:]
json.dump(result, open(f"{out}/perf.json", "w"), indent=1)
print(f"[perf] {len(result)} results in {out}/perf.json")
PY
echo "[perf] total $(( $(date +%s) - t0 ))s"
