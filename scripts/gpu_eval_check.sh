#!/usr/bin/env bash
# GPU checks beyond scripts/gpu_check.sh, run on the device machine with a carried checkpoint:
#   scripts/gpu_eval_check.sh BUILD_DIR CKPT TOKENIZER BOOK
# gpu tests (+ compute-sanitizer memcheck of the kernel tests when available), eval/stats
# memory against length, generation and passkey on CUDA, and the MoE loop-fallback benchmark.
set -uo pipefail
b=$1; ckpt=$2; tok=$3; book=$4
out=${OUT:-/tmp}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ctest --test-dir "$b" -L gpu --output-on-failure > "$out/gpu_tests.log" 2>&1; echo "[gpu tests] rc=$?"
grep -E "tests passed|\(Failed\)" "$out/gpu_tests.log"
if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  "$cs" --tool memcheck "$b/tests/test_gpu" --gtest_filter='*Kernel*:CudaKVCache*' > "$out/memcheck.log" 2>&1
  echo "[memcheck] rc=$? $(grep -E 'ERROR SUMMARY' "$out/memcheck.log" | tail -1)"
else
  echo "[memcheck] compute-sanitizer not found"
fi
set_dev=(--set train.device=cuda --set "data.tokenizer=$tok")
SLUICE=$b/sluice TOKENIZER=$tok BOOK=$book bash benchmarks/eval_memory.sh "$ckpt" "2048 8192 32768" "${set_dev[@]}" 2>&1 | tail -4
"$b/sluice" generate --ckpt "$ckpt" --prompt "def main(" --max-new-tokens 24 --temperature 0 "${set_dev[@]}" 2>&1 | tail -3
"$b/sluice" eval passkey --ckpt "$ckpt" --lengths 256,1024,4096 --trials 5 "${set_dev[@]}" --out "$out/passkey.json" 2>&1 | tail -5
"$b/benchmarks/bench_train_throughput" benchmarks/configs/moe_8x_top2.yaml --set model.moe.gemm=loop --warmup 3 --steps 10 \
  --out "$out/bench_moe_loop.json" > "$out/bench_moe_loop.log" 2>&1
echo "[bench] moe loop: $(grep -E '"tokens_per_s"' "$out/bench_moe_loop.json")"
