#!/usr/bin/env bash
# Stages kernels/flash as it is at git revisions into .variants/NAME, for scripts/flash_variants.sh
# on the device machine (which gets the working tree, not .git; pass carry [".device", ".variants"]).
# Usage: scripts/stage_variants.sh REV[=NAME]...   e.g. scripts/stage_variants.sh 1cdbb3c=verified HEAD=main
# The rest of the tree (src/, benchmarks/) stays the working tree's: revisions whose kernels/flash
# keeps the host API of flash_api.h.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
for spec in "$@"; do
  rev=${spec%%=*}; name=${spec#*=}; [ "$name" != "$spec" ] || name=$rev
  git rev-parse --verify -q "$rev^{commit}" >/dev/null || { echo "stage_variants: unknown revision '$rev'" >&2; exit 2; }
  rm -rf ".variants/$name" && mkdir -p ".variants/$name"
  git archive "$rev" kernels/flash | tar -x -C ".variants/$name" --strip-components=2
  echo "[variants] .variants/$name <- kernels/flash at $(git rev-parse --short "$rev")"
done
