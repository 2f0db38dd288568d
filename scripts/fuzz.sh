#!/usr/bin/env bash
# Builds the libFuzzer targets (build-fuzz/: clang++-14, torch-free only, ASan+UBSan) and runs
# each for SECONDS (default 60) on one core: -timeout=1 (an input over 1 s is a hang),
# -rss_limit_mb=2048, leak detection on. Prints executions and coverage (cov/ft) per target and
# fails on any crash, hang, leak or out-of-memory (the input is saved in build-fuzz/artifacts/).
#   scripts/fuzz.sh [SECONDS]
#   FUZZ_RUNS=1000000 scripts/fuzz.sh        a fixed number of executions instead of a time
#   FUZZ_TARGETS="fuzz_utf8 fuzz_shard" ...  a subset; FUZZ_CORPUS=seeds: start from the
#                                            committed seeds only (CI), not build-fuzz/corpus
# Seeds: fuzz/corpus/<target> (fuzz/make_corpus.sh writes them with the real writers);
# dictionaries fuzz/dict/<target>.dict; new inputs go to build-fuzz/corpus/<target>.
# docs/fuzzing.md has the targets, the commands and the numbers.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-fuzz_utf8 fuzz_tfevents fuzz_hf_config fuzz_checkpoint_json fuzz_safetensors_index fuzz_safetensors fuzz_shard fuzz_config}
cxx=${CXX_FUZZ:-clang++-14}

if [[ ! -f $build/build.ninja ]]; then
  mkdir -p "$build"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSLUICE_TORCH_FREE_ONLY=ON -DSLUICE_FUZZ=ON -DSLUICE_BUILD_TESTS=OFF > "$build/configure.log" 2>&1 \
    || { cat "$build/configure.log"; exit 1; }
fi
# shellcheck disable=SC2086
ninja -C "$build" -j "${JOBS:-2}" $targets fuzz_seed_writer
[[ -d $root/fuzz/corpus/fuzz_config ]] || "$root/fuzz/make_corpus.sh" "$build/fuzz/fuzz_seed_writer"

mkdir -p "$build/artifacts" "$build/run"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:malloc_context_size=10}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
printf '%-24s %10s %8s %8s %8s %6s %s\n' target execs exec/s cov ft corpus result
for t in $targets; do
  work=$build/corpus/$t
  [[ ${FUZZ_CORPUS:-} == seeds ]] && work=$(mktemp -d "$build/run/$t.XXXXXX")
  mkdir -p "$work"
  limit=(-max_total_time="$seconds")
  [[ -n ${FUZZ_RUNS:-} ]] && limit=(-runs="$FUZZ_RUNS")
  dict=()
  [[ -f $root/fuzz/dict/$t.dict ]] && dict=(-dict="$root/fuzz/dict/$t.dict")
  log=$build/run/$t.log
  rc=0
  # The targets write nothing; their working directory is build-fuzz/run all the same.
  (cd "$build/run" && "$build/fuzz/$t" "${limit[@]}" "${dict[@]}" -timeout=1 -rss_limit_mb=2048 -detect_leaks=1 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" "$work" "$root/fuzz/corpus/$t") > "$log" 2>&1 || rc=$?
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo "?")
  ft=$(grep -o 'ft: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo "?")
  corp=$(grep -o 'corp: [0-9]*' <<< "$last" | grep -o '[0-9]*' || echo "?")
  result=ok
  if [[ $rc -ne 0 ]]; then
    result="FAILED (rc $rc): $(grep -m1 -E 'ERROR: |SUMMARY: |fuzz property failed|runtime error' "$log" || echo "see $log")"
    status=1
  fi
  slowest=$(grep -oE 'stat::slowest_unit_time_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  printf '%-24s %10s %8s %8s %8s %6s %s\n' "$t" "$execs" "$rate" "$cov" "$ft" "$corp" "$result (slowest input ${slowest} s, $(du -sk "$work" | cut -f1) KiB corpus)"
  [[ $rc -ne 0 ]] && { tail -40 "$log"; ls "$build/artifacts/$t-"* 2>/dev/null || true; }
  [[ ${FUZZ_CORPUS:-} == seeds ]] && rm -rf "$work"
done
exit $status
