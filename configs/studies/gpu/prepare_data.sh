#!/usr/bin/env bash
# Prepares the dataset folder the GPU-scale study grids (configs/studies/gpu/*.yaml) train on,
# from the shared Gutenberg corpora only (no download; see configs/studies/gpu/README.md):
#
#   configs/studies/gpu/prepare_data.sh [SHARED_DATA_DIR] [OUT_DIR]     (from the repository root)
#
# SHARED_DATA_DIR (default ../shared/data) holds pretrain/gutenberg_train_00..03.txt,
# pretrain/gutenberg_val.txt, pretrain/manifest.tsv and longctx/shelley_frankenstein.txt.
# OUT_DIR (default runs/data/gutenberg_bpe16k, the path the grids name) must not exist or be
# empty. It gets:
#   tokenizer/  16384-piece SentencePiece BPE (`sluice data train-tokenizer`) on the 100 training books
#   train/      `sluice data prepare --documents files` over one file per training book: one document per book
#   val/        the same for the 7 books of gutenberg_val.txt (no val split: `data.val` reads its train split)
#   eval/       gutenberg_val.txt and shelley_frankenstein.txt, the texts `stats` and `ppl` read
# The per-book files are made by split_books.py (manifest.tsv's byte offsets) and removed at the
# end, so OUT_DIR is about 20 MB and can be copied (or carried) to a GPU machine that lacks
# ../shared. Set SLUICE to another binary than build/sluice, THREADS to limit the cores used.
set -euo pipefail

shared=${1:-../shared/data}
out=${2:-runs/data/gutenberg_bpe16k}
sluice=${SLUICE:-build/sluice}
threads=${THREADS:-0}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[[ -x $sluice ]] || { echo "prepare_data.sh: no sluice binary at '$sluice' (build it, or set SLUICE)" >&2; exit 2; }
for f in pretrain/gutenberg_train_00.txt pretrain/gutenberg_train_01.txt pretrain/gutenberg_train_02.txt \
         pretrain/gutenberg_train_03.txt pretrain/gutenberg_val.txt pretrain/manifest.tsv longctx/shelley_frankenstein.txt; do
  [[ -f $shared/$f ]] || { echo "prepare_data.sh: '$shared/$f' is missing" >&2; exit 2; }
done
if [[ -e $out && -n $(ls -A "$out") ]]; then
  echo "prepare_data.sh: '$out' exists and is not empty; remove it or name another folder" >&2
  exit 2
fi
mkdir -p "$out"

python3 "$here/split_books.py" "$shared/pretrain" "$out/books"
"$sluice" data train-tokenizer --input "$out/books/train" --vocab-size 16384 --model-type bpe \
  --threads "$threads" --out "$out/tokenizer"
"$sluice" data prepare --tokenizer "$out/tokenizer" --input "$out/books/train" --out "$out/train" \
  --documents files --val-fraction 0 --workers "$threads" --quiet
"$sluice" data prepare --tokenizer "$out/tokenizer" --input "$out/books/val" --out "$out/val" \
  --documents files --val-fraction 0 --workers "$threads" --quiet
mkdir -p "$out/eval"
cp "$shared/pretrain/gutenberg_val.txt" "$shared/longctx/shelley_frankenstein.txt" "$out/eval/"
rm -r "$out/books"
"$sluice" data inspect "$out/train"
"$sluice" data inspect "$out/val"
