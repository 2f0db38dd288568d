#!/usr/bin/env bash
# Peak memory and speed of a CPU training step under train.activation_checkpointing and
# train.loss_chunk_tokens (issue 23's CPU bar): benchmarks/configs/llama_125m.yaml in fp32,
# micro-batch 4 x 512 tokens, byte tokens into its 32000-entry head, 5 steps, both cores;
# peak resident set size from /usr/bin/time -v, tokens/s as the mean of steps 2-5.
#   benchmarks/activation_checkpoint_memory.sh          (~14 minutes on 2 cores)
# Napkin math (fp32, 2048 tokens): weights + gradients + AdamW's two moments are 4 x 4 x 125M
# = 2.0 GB whatever the setting. Activations kept for backward: per block about 12 tensors of
# d_model (768) and 3 of the SwiGLU width (2048) per token, i.e. ~15.4k floats = 126 MB per
# block, 1.5 GB for 12 blocks; the head's logits, their log-softmax and gradient 3 x 2048 x
# 32000 x 4 = 786 MB. Chunked CE drops the last; selective drops the attention region's ~4
# tensors of 768 per block (~25% of the blocks' share); full keeps each block's 6 MB input plus
# one block's activations while it is recomputed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sluice=${SLUICE:-$root/build/sluice}
text=${TEXT:-$root/../shared/data/pretrain/tinyshakespeare.txt}
steps=${STEPS:-5}
work=$root/build/bench-activation-checkpoint
mkdir -p "$work"
# name:activation_checkpointing:loss_chunk_tokens:malloc_mmap_threshold_mb; "today" is the step
# before issue 23 (glibc's adaptive mmap threshold, no chunks, no recompute).
runs=("today:none:0:0" "chunked:none:512:0" "selective:selective:512:0" "full:full:512:0"
      "plain_mmap1:none:0:1" "chunked_mmap1:none:512:1" "selective_mmap1:selective:512:1" "full_mmap1:full:512:1")
for r in "${runs[@]}"; do
  IFS=: read -r name mode chunk mmap <<< "$r"
  rm -rf "$work/$name"
  /usr/bin/time -v "$sluice" train "$root/benchmarks/configs/llama_125m.yaml" --set "data.train=$text" \
    --set data.tokenizer=byte --set data.seq_len=512 --set train.micro_batch=4 --set train.precision=fp32 \
    --set "train.steps=$steps" --set schedule.warmup_steps=1 --set train.eval_every=0 --set train.log_every=1 \
    --set train.device=cpu --set checkpoint.every=0 --set log.level=warn \
    --set "train.activation_checkpointing=$mode" --set "train.loss_chunk_tokens=$chunk" \
    --set "train.malloc_mmap_threshold_mb=$mmap" \
    --run-dir "$work/$name" 2> "$work/$name.time" > /dev/null
  echo "[bench] $name done" >&2
done
python3 - "$work" "${runs[@]}" <<'PY'
import json, re, sys
work, runs = sys.argv[1], [r.split(":") for r in sys.argv[2:]]
def peak(name):
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/{name}.time").read()).group(1)) / 1024
def records(name):
    return [r for r in map(json.loads, open(f"{work}/{name}/metrics.jsonl")) if "loss" in r]
result = {}
for name, mode, chunk, mmap in runs:
    rec = records(name)
    tps = [r["tokens_per_s"] for r in rec[1:]]
    result[name] = {"activation_checkpointing": mode, "loss_chunk_tokens": int(chunk),
                    "malloc_mmap_threshold_mb": float(mmap), "peak_rss_mib": peak(name),
                    "losses": [r["loss"] for r in rec], "tokens_per_s": sum(tps) / len(tps)}
plain = result["today"]
def mmap_mb(r):
    return f"{r['malloc_mmap_threshold_mb']:g}"
for name, r in result.items():
    r["rss_vs_today"] = r["peak_rss_mib"] / plain["peak_rss_mib"]
    r["max_loss_diff_vs_today"] = max(abs(a - b) for a, b in zip(r["losses"], plain["losses"]))
    print(f"{name:15s} {r['activation_checkpointing']:9s} chunk {r['loss_chunk_tokens']:4d} mmap {mmap_mb(r)}: peak RSS "
          f"{r['peak_rss_mib']:6.0f} MiB ({100 * r['rss_vs_today']:5.1f}% of today's), {r['tokens_per_s']:6.0f} tokens/s, "
          f"max |loss - today's| {r['max_loss_diff_vs_today']:.2e}")
json.dump(result, open(f"{work}/activation_checkpoint_memory.json", "w"), indent=2)
PY
