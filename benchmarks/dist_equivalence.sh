#!/usr/bin/env bash
# How close W data-parallel ranks come to one process with the same global batch, beside the
# noise floor of fp32 summation order (one process regrouping the same batch into two
# micro-batches). A small model (d_model 32, 2 layers, byte tokens, seq 24) for 8 steps on a
# shared public-domain text; per learning rate, the worst relative difference of any logged loss
# and of the final parameter vector (L2), and of the worst single tensor.
#   benchmarks/dist_equivalence.sh ["3e-4 3e-3"]         (about a minute)
# Needs .venv's torch to read the checkpoints. tests/test_dist.cpp asserts <= 1e-6 at lr 3e-4.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lrs=${1:-"3e-4 3e-3"}
sluice=${SLUICE:-$root/build/sluice}
text=${TEXT:-$root/../shared/data/pretrain/tinyshakespeare.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/c.yaml" <<YAML
model: {d_model: 32, n_layers: 2, n_heads: 2, n_kv_heads: 1, ffn_hidden: 64}
data: {train: $text, tokenizer: byte, seq_len: 24, val_fraction: 0.01}
train: {steps: 8, log_every: 1, eval_every: 0, eval_batches: 2, threads: 1, device: cpu}
schedule: {warmup_steps: 2}
log: {level: warn}
YAML
for lr in $lrs; do
  "$sluice" train "$work/c.yaml" --set optim.lr=$lr --set train.micro_batch=4 --run-dir "$work/one-$lr" >/dev/null
  "$sluice" train "$work/c.yaml" --set optim.lr=$lr --set train.micro_batch=2 --set train.grad_accum=2 --run-dir "$work/regroup-$lr" >/dev/null
  "$sluice" launch --nproc 2 -- train "$work/c.yaml" --set optim.lr=$lr --set train.micro_batch=2 --run-dir "$work/dp-$lr" >/dev/null
  "$sluice" launch --nproc 2 -- train "$work/c.yaml" --set optim.lr=$lr --set train.micro_batch=2 --set parallel.zero=1 --run-dir "$work/zero-$lr" >/dev/null
done
"$root/.venv/bin/python" - "$work" $lrs <<'PY' 2>/dev/null
import json, struct, sys, torch
work, lrs = sys.argv[1], sys.argv[2:]
def weights(run):
    b = open(f"{work}/{run}/checkpoints/step-00000008/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    return {k: torch.frombuffer(bytearray(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]), dtype=torch.float32)
            for k, v in h.items() if k != "__metadata__"}
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{work}/{run}/metrics.jsonl") if l.strip()]
print(f"{'lr':>6} {'run':>22} {'loss rel':>10} {'params rel':>11} {'worst tensor':>13}")
for lr in lrs:
    ref_w, ref_l = weights(f"one-{lr}"), losses(f"one-{lr}")
    for run, label in ((f"regroup-{lr}", "1 process, 2 x micro 2"), (f"dp-{lr}", "2 ranks"), (f"zero-{lr}", "2 ranks, ZeRO-1")):
        w, l = weights(run), losses(run)
        loss_rel = max(abs(a - b) / abs(a) for a, b in zip(ref_l, l))
        d2 = sum(float((ref_w[k] - w[k]).square().sum()) for k in ref_w); n2 = sum(float(ref_w[k].square().sum()) for k in ref_w)
        worst = max(float((ref_w[k] - w[k]).norm() / ref_w[k].norm()) for k in ref_w)
        print(f"{lr:>6} {label:>22} {loss_rel:10.2e} {(d2 / n2) ** 0.5:11.2e} {worst:13.2e}")
PY
