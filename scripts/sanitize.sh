#!/usr/bin/env bash
# The sanitizer job (CI runs it after scripts/test.sh): an ASan+UBSan build of the torch-free
# code (build-asan/: clang++-14, SLUICE_TORCH_FREE_ONLY, SLUICE_SANITIZE, SLUICE_FUZZ) and
#   1. the cpu-labelled tests of it under ctest: test_config (config loading, validation,
#      overrides), test_text (UTF-8, tokenizers, shards, `data prepare`), test_formats (the
#      safetensors and checkpoint JSON readers), test_tensorboard_events, test_hf_import;
#   2. every fuzz target on its committed seed corpus for FUZZ_SECONDS (default 15) each, so a
#      reader change that crashes, hangs, leaks or trips UBSan on the corpus fails CI.
# LibTorch is not instrumented and not part of this build, so nothing is suppressed: any report
# is ours. Timing on a fresh clone with 2 cores: docs/fuzzing.md.
#   scripts/sanitize.sh            (JOBS=2, FUZZ_SECONDS=15, ASAN_BUILD_DIR=build-asan)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ASAN_BUILD_DIR:-$root/build-asan}
start=$(date +%s)
say() { echo "[sanitize] $*" >&2; }

if [[ ! -f $build/build.ninja ]]; then
  mkdir -p "$build"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="${CXX_SANITIZE:-clang++-14}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSLUICE_TORCH_FREE_ONLY=ON -DSLUICE_SANITIZE=ON -DSLUICE_FUZZ=ON > "$build/configure.log" 2>&1 \
    || { cat "$build/configure.log"; exit 1; }
fi
ninja -C "$build" -j "${JOBS:-2}"
say "built in $(( $(date +%s) - start ))s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" -L cpu -j "${JOBS:-2}" --output-on-failure --timeout 300
say "tests done at $(( $(date +%s) - start ))s"

FUZZ_BUILD_DIR=$build FUZZ_CORPUS=seeds ASAN_OPTIONS=detect_leaks=1 "$root/scripts/fuzz.sh" "${FUZZ_SECONDS:-15}"
say "total $(( $(date +%s) - start ))s"
