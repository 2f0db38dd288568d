#!/usr/bin/env bash
# One-shot GPU validation on the device machine (see ../shared/device/README.md):
# configure + build once, run the gpu and cpu tests, then the throughput benchmarks.
# Usage: scripts/gpu_check.sh [BENCH_CONFIG...]   (default: the 125M dense, 125M G1, MoE configs)
# Environment: BENCH_BACKENDS="sdpa fused" benchmarks each config once per attention backend
# (default: the config's own); SKIP_CPU_TESTS=1 skips the cpu-labelled tests.
# Results (logs, JSON) go to $OUT when set, else build-gpu/out.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_common.sh"
t0=$(date +%s)
gpu_build "" || exit 1
echo "[gpu] build $(( $(date +%s) - t0 ))s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
ctest --test-dir "$b" -L gpu -j 6 --output-on-failure > "$out/ctest_gpu.log" 2>&1; echo "[gpu] ctest -L gpu rc=$?"
grep -E "tests passed|Skipped|Not Run|\(Failed\)" "$out/ctest_gpu.log" | head -20
if [ "${SKIP_CPU_TESTS:-0}" != 1 ]; then
  ctest --test-dir "$b" -L cpu -j 12 --output-on-failure > "$out/ctest_cpu.log" 2>&1; echo "[gpu] ctest -L cpu rc=$?"
  grep -E "tests passed|\(Failed\)" "$out/ctest_cpu.log" | head -10
fi
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(benchmarks/configs/llama_125m.yaml benchmarks/configs/llama_125m_g1.yaml benchmarks/configs/moe_8x_top2.yaml)
for c in "${configs[@]}"; do
  for backend in ${BENCH_BACKENDS:-config}; do
    name=$(basename "$c" .yaml)
    set_backend=()
    if [ "$backend" != config ]; then name="${name}_$backend"; set_backend=(--set "model.attention.backend=$backend"); fi
    "$b/benchmarks/bench_train_throughput" "$c" "${set_backend[@]}" --warmup 5 --steps 20 --out "$out/bench_$name.json" > "$out/bench_$name.log" 2>&1
    echo "[bench] $name: $(grep -E '"tokens_per_s"|"peak_memory_gib"|"mfu"|"gemm' "$out/bench_$name.json" | tr -d '\n ' )"
    grep -E "error" "$out/bench_$name.log" | head -3
  done
done
"$b/benchmarks/bench_attention" --out "$out/bench_attention.json" > "$out/bench_attention.log" 2>&1; echo "[bench] attention rc=$?"
grep -vE "^$" "$out/bench_attention.log" | head -20
"$b/benchmarks/bench_elementwise" --out "$out/bench_elementwise.json" > "$out/bench_elementwise.log" 2>&1; echo "[bench] elementwise rc=$?"
cat "$out/bench_elementwise.log"
