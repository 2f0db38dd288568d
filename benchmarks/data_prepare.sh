#!/usr/bin/env bash
# `sluice data prepare` throughput and peak memory (issue bar: >= 5 MB/s, < 1 GiB on 2 cores).
#   benchmarks/data_prepare.sh [TEXT_FILE] [WORKERS]
# Default text: ../shared/data/pretrain/gutenberg_train_00.txt (6.5 MB). A 32k BPE tokenizer is
# trained on it first (once, cached in build/bench-data/). Napkin math: SentencePiece BPE encodes
# ~2-3 MB/s per core; the per-worker word cache (src/data/cached_encoder.h) skips BPE for the
# ~95% of words already seen, which is what makes 5 MB/s on 2 cores reachable.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
text=${1:-$root/../shared/data/pretrain/gutenberg_train_00.txt}
workers=${2:-2}
sluice=${SLUICE:-$root/build/sluice}
work=$root/build/bench-data
mkdir -p "$work"
[ -f "$work/tok32k/tokenizer.model" ] || "$sluice" data train-tokenizer --input "$text" --vocab-size 32000 --out "$work/tok32k"
rm -rf "$work/shards"
/usr/bin/time -v "$sluice" data prepare --tokenizer "$work/tok32k" --input "$text" --out "$work/shards" \
  --workers "$workers" 2> "$work/time.txt" | tee "$work/prepare.txt"
rss_kb=$(grep "Maximum resident" "$work/time.txt" | awk '{print $NF}')
base_kb=$( { /usr/bin/time -v "$sluice" --version >/dev/null; } 2>&1 | grep "Maximum resident" | awk '{print $NF}')
echo "peak RSS: $((rss_kb / 1024)) MiB (of which $((base_kb / 1024)) MiB is the sluice binary with LibTorch loaded)"
grep -E "Elapsed|Percent of CPU" "$work/time.txt"
