#!/usr/bin/env bash
# Sets up if needed, then: trains a SentencePiece tokenizer and prepares token shards from
# a text corpus (once; cached in build/demo/), trains configs/tiny.yaml (~1M parameters, a
# few minutes on a CPU), evaluates the run (perplexity versus length, attention statistics),
# writes the HTML report and prints where the results are.
# Text: DEMO_TEXT=path (a file or a folder), else the Python standard library's sources.
# Extra arguments go to `sluice train`, e.g. scripts/demo.sh --set train.steps=200
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
sluice="${BUILD_DIR:-build}/sluice"
demo=${DEMO_DIR:-build/demo}
text=${DEMO_TEXT:-$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')}
if [ -n "${DEMO_TEXT:-}" ]; then
  demo="$demo-$(printf '%s' "$DEMO_TEXT" | cksum | cut -d' ' -f1)"  # one cache per corpus
  inputs=("$text")
else
  inputs=($(find "$text" -maxdepth 1 -name '*.py' | LC_ALL=C sort))  # top-level stdlib modules, ~4.7 MB
fi
mkdir -p "$demo"
if [ ! -f "$demo/tokenizer/tokenizer.model" ]; then
  "$sluice" data train-tokenizer --input "${inputs[@]}" --vocab-size 2048 --model-type bpe --out "$demo/tokenizer"
fi
if [ ! -f "$demo/data/manifest.json" ]; then
  "$sluice" data prepare --tokenizer "$demo/tokenizer" --input "${inputs[@]}" --out "$demo/data" --val-fraction 0.05
fi
run_dir=${DEMO_RUN_DIR:-runs/tiny-$(date -u +%Y%m%d-%H%M%S)}
"$sluice" train configs/tiny.yaml --set "data.train=$demo/data" --set "data.tokenizer=$demo/tokenizer" \
  --run-dir "$run_dir" "$@"
# Perplexity at the training length (128) and beyond it, plain and with dynamic NTK scaling.
"$sluice" eval ppl --ckpt "$run_dir" --data "$demo/data" --seq-len 64,128,256,512 --stride 32 --max-docs 4 \
  --out "$run_dir/eval/ppl.json"
"$sluice" eval ppl --ckpt "$run_dir" --data "$demo/data" --seq-len 64,128,256,512 --stride 32 --max-docs 4 \
  --set model.rope.scaling=dynamic_ntk --set model.rope.factor=4 --set model.rope.original_max_len=128 \
  --out "$run_dir/eval/ppl_dynamic_ntk.json"
"$sluice" stats attention --ckpt "$run_dir" --data "$demo/data" --sequences 8 --out "$run_dir/eval/stats_attention.json"
"$sluice" report "$run_dir" --out "$run_dir/report.html"
echo "[demo] run: $run_dir   report: $run_dir/report.html"
