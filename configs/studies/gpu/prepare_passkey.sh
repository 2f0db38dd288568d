#!/usr/bin/env bash
# Makes the training and validation data of configs/studies/gpu/passkey_extrapolation.yaml in a
# folder prepare_data.sh made (it needs only that folder's tokenizer/, not ../shared):
#
#   configs/studies/gpu/prepare_passkey.sh [DATA_DIR]     (from the repository root)
#
# DATA_DIR (default runs/data/gutenberg_bpe16k) gets passkey_train/ (26.5M tokens, about 53 MB of
# shards) and passkey_val/ (0.3M tokens): compact passkey samples (docs/eval.md) with the
# protocol's repeated filler, 128-1024 tokens each, lengths counted in the BPE tokenizer's
# tokens; seeds 1 (train) and 2 (val). The folder with passkey_train/ is over the 64 MiB a GPU
# call can carry, so carry DATA_DIR without it and run this there (it is deterministic).
# Set SLUICE to another binary than build/sluice, THREADS to limit the cores used.
set -euo pipefail

data=${1:-runs/data/gutenberg_bpe16k}
sluice=${SLUICE:-build/sluice}
threads=${THREADS:-0}

[[ -x $sluice ]] || { echo "prepare_passkey.sh: no sluice binary at '$sluice' (build it, or set SLUICE)" >&2; exit 2; }
[[ -f $data/tokenizer/tokenizer.model ]] || { echo "prepare_passkey.sh: '$data/tokenizer/tokenizer.model' is missing (run prepare_data.sh first)" >&2; exit 2; }
for name in train val; do
  [[ ! -e $data/passkey_$name ]] || { echo "prepare_passkey.sh: '$data/passkey_$name' exists; remove it first" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for split in train:1:26500000 val:2:300000; do
  IFS=: read -r name seed tokens <<<"$split"
  mkdir -p "$tmp/$name"
  "$sluice" data passkey-corpus --tokenizer "$data/tokenizer" --tokens "$tokens" --min-length 128 --max-length 1024 \
    --seed "$seed" --out "$tmp/$name/passkey_$name.txt"
  "$sluice" data prepare --tokenizer "$data/tokenizer" --input "$tmp/$name" --out "$data/passkey_$name" \
    --documents files --val-fraction 0 --workers "$threads" --quiet
  "$sluice" data inspect "$data/passkey_$name"
done
