#!/usr/bin/env bash
# Stages kernels/flash as it is at git revisions into .variants/NAME, for scripts/flash_variants.sh
# on the device machine (which gets the working tree, not .git; pass carry [".device", ".variants"]).
# Usage: scripts/stage_variants.sh REV[=NAME]...   e.g. scripts/stage_variants.sh 1cdbb3c=verified HEAD=main
# The rest of the tree (src/, benchmarks/) stays the working tree's: revisions whose kernels/flash
# keeps the host API of flash_api.h (older ones get the one parameter added since, see below).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
for spec in "$@"; do
  rev=${spec%%=*}; name=${spec#*=}; [ "$name" != "$spec" ] || name=$rev
  git rev-parse --verify -q "$rev^{commit}" >/dev/null || { echo "stage_variants: unknown revision '$rev'" >&2; exit 2; }
  rm -rf ".variants/$name" && mkdir -p ".variants/$name"
  git archive "$rev" kernels/flash | tar -x -C ".variants/$name" --strip-components=2
  # Revisions before the fused ALiBi (44960b0) lack the alibi_slopes parameter that
  # src/model/fused_attention.cpp passes to flash_forward/flash_backward: add it, refusing slopes.
  if ! grep -q alibi_slopes ".variants/$name/flash_api.h"; then
    python3 - ".variants/$name" <<'PY'
import sys
d = sys.argv[1]
h = open(d + "/flash_api.h").read()
h = h.replace("const FlashDocuments& docs = {});", "const FlashDocuments& docs = {}, const at::Tensor& alibi_slopes = {});")
open(d + "/flash_api.h", "w").write(h)
c = open(d + "/flash_api.cu").read()
check = '\n  TORCH_CHECK(!alibi_slopes.defined(), "this kernel variant predates the fused ALiBi");'
for old in ("const at::Tensor& gate_in, const FlashDocuments& docs) {", "    const FlashDocuments& docs) {"):
    assert old in c, old
    c = c.replace(old, old[:-3] + ", const at::Tensor& alibi_slopes) {" + check, 1)
open(d + "/flash_api.cu", "w").write(c)
PY
    echo "[variants] .variants/$name: alibi_slopes parameter added to its host API (refuses slopes)"
  fi
  echo "[variants] .variants/$name <- kernels/flash at $(git rev-parse --short "$rev")"
done
