#!/usr/bin/env bash
# One-shot GPU validation on the device machine (see ../shared/device/README.md):
# configure + build once, run the gpu and cpu tests, then the throughput benchmark.
# Results (logs, JSON) go to $OUT when set, else build-gpu/out.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-build-gpu/out}
mkdir -p "$out"
b=${GPU_BUILD_DIR:-/tmp/sluice-build}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
t0=$(date +%s)
cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
cmake --build "$b" > "$out/build.log" 2>&1 || { grep -E "error|FAILED" "$out/build.log" | head -40; exit 1; }
echo "[gpu] build $(( $(date +%s) - t0 ))s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
ctest --test-dir "$b" -L gpu --output-on-failure > "$out/ctest_gpu.log" 2>&1; echo "[gpu] ctest -L gpu rc=$?"; tail -5 "$out/ctest_gpu.log"
grep -E "Skipped|Not Run|Failed" "$out/ctest_gpu.log" | head -20
ctest --test-dir "$b" -L cpu -j 8 --output-on-failure > "$out/ctest_cpu.log" 2>&1; echo "[gpu] ctest -L cpu rc=$?"; tail -3 "$out/ctest_cpu.log"
for spec in "${@:-sdpa}"; do
  "$b/benchmarks/bench_train_throughput" benchmarks/configs/llama_125m.yaml --set "model.attention.backend=$spec" \
    --warmup 5 --steps 20 --out "$out/bench_125m_$spec.json" 2>&1 | grep -E "tokens_per_s|peak_memory|mfu|ms_per|error" 
done
