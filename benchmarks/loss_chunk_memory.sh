#!/usr/bin/env bash
# Peak memory of a CPU training step with and without train.loss_chunk_tokens: configs/tiny.yaml
# with a 65536-entry vocabulary (byte tokens; the head is what grows), micro-batch 16 x 128 =
# 2048 tokens, 3 steps, one thread; peak resident set size from /usr/bin/time -v.
#   benchmarks/loss_chunk_memory.sh [CHUNK]        (default 256; ~1 minute)
# Napkin math: the whole logits are 2048 x 65536 fp32 = 537 MB, and the plain path holds them,
# their log-softmax and their gradient (another 537 MB each) at the peak of backward; chunks of
# 256 tokens hold 67 MB at a time. Both runs must log the same losses and gradient norms.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chunk=${1:-256}
sluice=${SLUICE:-$root/build/sluice}
text=${TEXT:-$root/../shared/data/pretrain/tinyshakespeare.txt}
work=$root/build/bench-loss-chunk
mkdir -p "$work"
for c in 0 "$chunk"; do
  rm -rf "$work/run$c"
  /usr/bin/time -v "$sluice" train "$root/configs/tiny.yaml" --set "data.train=$text" --set data.tokenizer=byte \
    --set model.vocab_size=65536 --set train.micro_batch=16 --set train.steps=3 --set schedule.warmup_steps=1 \
    --set train.eval_every=0 --set train.eval_batches=1 --set train.log_every=1 --set train.threads=1 \
    --set train.device=cpu --set checkpoint.every=0 --set log.level=warn --set "train.loss_chunk_tokens=$c" \
    --run-dir "$work/run$c" 2> "$work/time$c.txt" > /dev/null
done
python3 - "$work" "$chunk" <<'PY'
import json, re, sys
work, chunk = sys.argv[1], sys.argv[2]
def peak(c):
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/time{c}.txt").read()).group(1)) / 1024
def curve(c):
    return [(r["loss"], r["grad_norm"]) for r in map(json.loads, open(f"{work}/run{c}/metrics.jsonl")) if "loss" in r]
result = {"plain_peak_rss_mib": peak(0), "chunked_peak_rss_mib": peak(chunk), "chunk_tokens": int(chunk),
          "plain_curve": curve(0), "chunked_curve": curve(chunk)}
json.dump(result, open(f"{work}/loss_chunk_memory.json", "w"), indent=2)
print(f"peak RSS: plain {result['plain_peak_rss_mib']:.0f} MiB, chunks of {chunk} tokens "
      f"{result['chunked_peak_rss_mib']:.0f} MiB; (loss, grad_norm) plain {result['plain_curve']} chunked {result['chunked_curve']}")
PY
