#!/usr/bin/env bash
# Peak memory of `sluice eval ppl` and `sluice stats attention` against sequence length: it
# should grow linearly (no N x N attention matrix is formed; sink statistics come from
# per-query log-sum-exps in query chunks).
#   benchmarks/eval_memory.sh CKPT_OR_RUN_DIR "2048 8192" [--set train.device=cuda ...]
# Data: a long held-out book (../shared/data/longctx; BOOK=... to change), tokenized with the
# checkpoint's tokenizer (TOKENIZER=... when the checkpoint's path does not exist here).
# CPU: peak RSS from /usr/bin/time. CUDA: peak_device_memory_bytes from the stats JSON and the
# process RSS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ckpt=$1; lengths=${2:-"2048 8192"}; shift 2 || true
sluice=${SLUICE:-$root/build/sluice}
book=${BOOK:-$root/../shared/data/longctx/austen_pride_and_prejudice.txt}
work=$(mktemp -d)
tok=${TOKENIZER:-$(grep -m1 '  tokenizer:' "$ckpt"/config.yaml 2>/dev/null | awk '{print $2}' || true)}
"$sluice" data prepare --tokenizer "$tok" --input "$book" --out "$work/book" --quiet >/dev/null
echo "length  ppl_peak_rss_MiB  stats_peak_rss_MiB  ppl_peak_device_MiB  stats_peak_device_MiB"
for n in $lengths; do
  /usr/bin/time -f "%M" -o "$work/ppl.t" "$sluice" eval ppl --ckpt "$ckpt" --data "$work/book" --split train \
    --seq-len "$n" --max-docs 1 --batch 1 --out "$work/ppl.json" "$@" >/dev/null
  /usr/bin/time -f "%M" -o "$work/stats.t" "$sluice" stats attention --ckpt "$ckpt" --data "$work/book" --split train \
    --seq-len "$n" --sequences 1 --out "$work/stats.json" "$@" >/dev/null
  dev() { python3 -c "import json;print(json.load(open('$1'))['peak_device_memory_bytes']//2**20)"; }
  echo "$n  $(( $(cat "$work/ppl.t") / 1024 ))  $(( $(cat "$work/stats.t") / 1024 ))  $(dev "$work/ppl.json")  $(dev "$work/stats.json")"
done
rm -rf "$work"
