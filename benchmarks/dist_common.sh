# Sourced by the multi-process CPU benchmarks (dist_throughput.sh, ep_alltoall.sh): $root, $steps
# (the first argument, default 40), $sluice, $work (build/bench-dist), the data both use (a
# 2048-piece BPE tokenizer and shards of ../shared/data/pretrain/gutenberg_train_00.txt, made once
# and cached in $work), and bench_args CONFIG: the training arguments every run shares (one
# thread per rank, log every 10 steps, no evaluation).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=${1:-40}
sluice=${SLUICE:-$root/build/sluice}
text=${TEXT:-$root/../shared/data/pretrain/gutenberg_train_00.txt}
work=$root/build/bench-dist
mkdir -p "$work"
[ -f "$work/tok/tokenizer.model" ] || "$sluice" data train-tokenizer --input "$text" --vocab-size 2048 --model-type bpe --out "$work/tok"
[ -f "$work/data/manifest.json" ] || "$sluice" data prepare --tokenizer "$work/tok" --input "$text" --out "$work/data" --documents blank-lines --val-fraction 0.01
bench_args() {
  common=("$1" --set "data.train=$work/data" --set "data.tokenizer=$work/tok" --set "train.steps=$steps"
          --set train.threads=1 --set schedule.warmup_steps=5 --set train.log_every=10 --set train.eval_every=0
          --set train.eval_batches=1 --set log.level=warn)
}
cd "$root"
