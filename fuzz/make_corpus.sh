#!/usr/bin/env bash
# Seed corpora for the fuzz targets (fuzz/corpus/<target>/), every file produced by real code:
#   fuzz_config             configs/**/*.yaml, `sluice config show` output, and the same with
#                           leading "--set KEY=VALUE" lines (overrides as the README uses them)
#   fuzz_utf8               slices of the repository's text (docs, README, test sources with
#                           multi-byte text), cut at arbitrary byte offsets
#   fuzz_shard              shards from prepare_shards (`sluice data prepare`, byte tokenizer)
#                           and ShardWriter with 4-byte tokens (build-fuzz/fuzz/fuzz_seed_writer)
#   fuzz_safetensors        model/optimizer/rng .safetensors of a 2-step `sluice train` run of a
#   fuzz_safetensors_index  micro model (build/sluice: the LibTorch writer), the index.json of
#   fuzz_checkpoint_json    the same run sharded (checkpoint.max_shard_mb=1), its
#                           trainer_state.json and meta.json
#   fuzz_tfevents           the TensorBoard event files (RUN_DIR/tb/) of those runs
#   fuzz_hf_config          config.json of `sluice export hf` (Llama, Qwen3, Qwen3-Next, Qwen3-MoE,
#                           remote code) and of transformers' save_pretrained (tests/hf_make_model.py),
#                           and that file in transformers 4.x's rope_scaling layout
# Usage: fuzz/make_corpus.sh [SEED_WRITER [SLUICE_BIN]]. Without build/sluice the last three
# keep their committed seeds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
writer=${1:-$root/build-fuzz/fuzz/fuzz_seed_writer}
sluice_bin=${2:-$root/build/sluice}
out=$root/fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$root"

# --- config --------------------------------------------------------------------------
d=$out/fuzz_config; rm -rf "$d"; mkdir -p "$d"
for f in configs/*.yaml configs/ablations/*.yaml; do cp "$f" "$d/$(echo "$f" | tr / _)"; done
{ echo "--set train.steps=200"; cat configs/tiny.yaml; } > "$d/set_steps_tiny.yaml"
{ echo "--set data.train=ds"; echo "--set data.tokenizer=tok"; echo "--set model.attention.backend=math";
  cat configs/moe_tiny.yaml; } > "$d/set_paths_moe_tiny.yaml"
{ echo "--set parallel.zero=1"; echo "--set train.deterministic=true"; cat configs/ablations/pos_coca_strict.yaml; } \
  > "$d/set_bools_coca.yaml"
if [[ -x $sluice_bin ]]; then
  "$sluice_bin" config show configs/tiny.yaml --set data.tokenizer=byte --set data.train=README.md > "$d/show_tiny.yaml"
  "$sluice_bin" config show configs/moe_tiny.yaml --set data.tokenizer=byte --set data.train=README.md > "$d/show_moe_tiny.yaml"
fi

# --- utf8 ----------------------------------------------------------------------------
d=$out/fuzz_utf8; rm -rf "$d"; mkdir -p "$d"
i=0
for f in README.md docs/*.md tests/test_data.cpp tests/test_text.cpp tests/data_fixtures.h; do
  [[ -f $f ]] || continue
  size=$(stat -c %s "$f")
  for off in 0 $((size / 3)) $((size * 2 / 3 + 1)); do
    tail -c +$((off + 1)) "$f" | head -c 1500 > "$d/$(basename "$f").$off"
  done
  i=$((i + 1))
done
grep -h -o '"[^"]*[^ -~"][^"]*"' tests/data_fixtures.h > "$d/tricky_strings" || true

# --- shards --------------------------------------------------------------------------
d=$out/fuzz_shard; rm -rf "$d"; mkdir -p "$d"
"$writer" prepare "$tmp/ds" 700 README.md docs/data.md > /dev/null
for f in "$tmp"/ds/*.bin; do cp "$f" "$d/$(basename "$f")"; done
"$writer" shard32 "$d/uint32-tokens.bin"
# keep the seeds small (libFuzzer's default -max_len is the largest seed)
find "$d" -size +6k -delete

# --- checkpoint files (the LibTorch writer) ---------------------------------------------
if [[ -x $sluice_bin ]]; then
  head -c 20000 README.md > "$tmp/train.txt"
  cat > "$tmp/micro.yaml" <<YAML
run: {name: micro, dir: $tmp/runs}
model: {vocab_size: 0, d_model: 8, n_layers: 1, n_heads: 2, n_kv_heads: 1, ffn_hidden: 16}
data: {train: $tmp/train.txt, tokenizer: byte, seq_len: 16}
train: {steps: 2, micro_batch: 2, log_every: 1, eval_every: 0, eval_batches: 1}
schedule: {warmup_steps: 1}
checkpoint: {every: 0}
YAML
  "$sluice_bin" train "$tmp/micro.yaml" --run-dir "$tmp/micro" > "$tmp/micro.log" 2>&1 || { cat "$tmp/micro.log"; exit 1; }
  ck=$(ls -d "$tmp"/micro/checkpoints/step-*)
  # a model of a few MiB with 1 MiB shards: the HuggingFace index layout
  "$sluice_bin" train "$tmp/micro.yaml" --run-dir "$tmp/sharded" --set model.d_model=256 --set model.n_layers=2 --set model.n_heads=4 \
    --set model.n_kv_heads=2 --set model.ffn_hidden=512 --set train.steps=1 --set checkpoint.max_shard_mb=1 \
    > "$tmp/sharded.log" 2>&1 || { cat "$tmp/sharded.log"; exit 1; }
  sk=$(ls -d "$tmp"/sharded/checkpoints/step-*)
  # two data-parallel ranks, saved mid log interval: per-rank interval sums in trainer_state.json
  "$sluice_bin" launch --nproc 2 -- train "$tmp/micro.yaml" --run-dir "$tmp/dp" --set train.steps=3 \
    --set train.log_every=2 --set train.micro_batch=1 > "$tmp/dp.log" 2>&1 || { cat "$tmp/dp.log"; exit 1; }
  dk=$(ls -d "$tmp"/dp/checkpoints/step-*)
  d=$out/fuzz_safetensors; rm -rf "$d"; mkdir -p "$d"
  for f in model optimizer rng; do cp "$ck/$f.safetensors" "$d/micro-$f.safetensors"; done
  d=$out/fuzz_safetensors_index; rm -rf "$d"; mkdir -p "$d"
  cp "$sk/model.safetensors.index.json" "$d/"
  d=$out/fuzz_checkpoint_json; rm -rf "$d"; mkdir -p "$d"
  cp "$ck/trainer_state.json" "$ck/meta.json" "$d/"
  cp "$dk/trainer_state.json" "$d/trainer_state-2-ranks.json"
  d=$out/fuzz_tfevents; rm -rf "$d"; mkdir -p "$d"
  cp "$tmp"/micro/tb/events.out.tfevents.* "$d/micro.tfevents"
  cp "$tmp"/dp/tb/events.out.tfevents.* "$d/dp.tfevents"
  # config.json of `sluice export hf` for each kind of class, and of transformers' save_pretrained
  d=$out/fuzz_hf_config; rm -rf "$d"; mkdir -p "$d"
  for v in "llama:" "qwen3:--set model.qk_norm=true --set model.head_dim=4" \
           "yarn:--set model.rope.scaling=yarn --set model.rope.factor=4 --set model.rope.original_max_len=16" \
           "qwen3_next:--set model.qk_norm=true --set model.attention.gate.position=G1" \
           "qwen3_moe:--set model.qk_norm=true --set model.arch=moe --set model.moe.n_experts=4" \
           "remote:--set model.attention.gate.position=G1 --set model.attention.window=4"; do
    name=${v%%:*}; sets=${v#*:}
    # shellcheck disable=SC2086
    "$sluice_bin" train "$tmp/micro.yaml" --run-dir "$tmp/hf-$name" --set train.steps=1 $sets > "$tmp/hf-$name.log" 2>&1 \
      || { cat "$tmp/hf-$name.log"; exit 1; }
    "$sluice_bin" export hf --ckpt "$tmp/hf-$name" --out "$tmp/hf-$name-export" > /dev/null
    cp "$tmp/hf-$name-export/config.json" "$d/sluice-export-$name.json"
  done
  python=$root/.venv/bin/python
  if "$python" -c 'import transformers' 2>/dev/null; then
    for kind in llama qwen3_moe; do
      "$python" tests/hf_make_model.py "$tmp/tf-$kind" $kind float32 > /dev/null 2>&1
      cp "$tmp/tf-$kind/config.json" "$d/transformers-$kind.json"
    done
    # the transformers 4.x layout of the same file: rope_theta + rope_scaling instead of rope_parameters
    "$python" -c 'import json, sys; c = json.load(open(sys.argv[1])); r = c.pop("rope_parameters"); c["rope_theta"] = r["rope_theta"]; c["rope_scaling"] = {"type": "linear", "factor": 2.0}; c["torch_dtype"] = c.pop("dtype"); json.dump(c, open(sys.argv[2], "w"), indent=2)' \
      "$d/transformers-llama.json" "$d/transformers4-rope-scaling.json"
  fi
fi
for t in "$out"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) seeds, $(du -sk "$t" | cut -f1) KiB"; done

# --- the config dictionary: every key of the schema (docs/config.md is generated from it),
# its path components, the choices of string keys, YAML syntax
{
  echo '"--set "'; echo '"="'; echo '": "'; echo '"\x0a"'; echo '"  "'; echo '"- "'; echo '"["'; echo '"]"'; echo '"{"'; echo '"}"'
  echo '", "'; echo '"true"'; echo '"false"'; echo '"null"'; echo '"~"'; echo '"&a "'; echo '"*a"'; echo '"!!str "'; echo '"---"'
  echo '"|"'; echo '">"'; echo '"#"'; echo '"1e-3"'; echo '"-1"'; echo '"0x10"'; echo '".inf"'; echo '".nan"'
  grep -o '^| `[a-z0-9_.]*`' docs/config.md | sed 's/^| `\(.*\)`/\1/' | while read -r k; do
    echo "\"$k\""; echo "\"$k=\""; tr . '\n' <<< "$k" | sed 's/.*/"&:"/'
  done
  grep -o 'string: [a-z0-9_, ]*' docs/config.md | sed 's/string: //' | tr ',' '\n' | tr -d ' ' | grep . | sed 's/.*/"&"/'
} | sort -u > fuzz/dict/fuzz_config.dict
echo "fuzz_config.dict: $(wc -l < fuzz/dict/fuzz_config.dict) tokens"
