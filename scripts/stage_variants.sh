#!/usr/bin/env bash
# Stages kernels/flash as it is at git revisions into .variants/NAME, for scripts/flash_variants.sh
# on the device machine (which gets the working tree, not .git; pass carry [".device", ".variants"]).
# Usage: scripts/stage_variants.sh REV[=NAME]...   e.g. scripts/stage_variants.sh 1cdbb3c=verified HEAD=main
# The rest of the tree (src/, benchmarks/) stays the working tree's: revisions whose kernels/flash
# keeps the host API of flash_api.h (older ones get what was added since, see below).
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
  # Revisions before the per-device backward tiles (bwd_tiles.h) lack flash_backward_tile, which
  # src/model/fused_attention.cpp calls: add it, naming their one tile per head dim.
  if ! grep -q flash_backward_tile ".variants/$name/flash_api.h"; then
    python3 - ".variants/$name" <<'PY'
import sys
d = sys.argv[1]
h = open(d + "/flash_api.h").read()
h = h.replace("#include <tuple>", "#include <string>\n#include <tuple>", 1)
i = h.rindex("}  // namespace sluice::kernels")
h = h[:i] + "std::string flash_backward_tile(int64_t head_dim, const at::Device& device);\n\n" + h[i:]
open(d + "/flash_api.h", "w").write(h)
with open(d + "/flash_api.cu", "a") as c:
    c.write("""
// Added by scripts/stage_variants.sh: this revision has one backward tile per head dim.
#include "flash/traits.h"
namespace sluice::kernels {
std::string flash_backward_tile(int64_t head_dim, const at::Device&) {
  using T64 = flash::BwdTraits<64, __nv_bfloat16>;
  using T128 = flash::BwdTraits<128, __nv_bfloat16>;
  return head_dim == 64 ? std::to_string(T64::kBlockM) + "x" + std::to_string(T64::kBlockN)
                        : std::to_string(T128::kBlockM) + "x" + std::to_string(T128::kBlockN);
}
}  // namespace sluice::kernels
""")
PY
    echo "[variants] .variants/$name: flash_backward_tile added to its host API"
  fi
  # Revisions before the deterministic dQ kernel lack flash_backward's `deterministic` parameter,
  # which src/model/fused_attention.cpp passes: add it, refusing true.
  if ! grep -q "bool deterministic" ".variants/$name/flash_api.h"; then
    python3 - ".variants/$name" <<'PY'
import sys
d = sys.argv[1]
h = open(d + "/flash_api.h").read()
old = "const at::Tensor& alibi_slopes = {});"
i = h.rindex(old)  # flash_backward's, declared after flash_forward's
h = h[:i] + "const at::Tensor& alibi_slopes = {}, bool deterministic = false);" + h[i + len(old):]
open(d + "/flash_api.h", "w").write(h)
c = open(d + "/flash_api.cu").read()
i = c.index("> flash_backward(")
j = c.index(") {", i)
c = c[:j] + (", bool deterministic) {\n  TORCH_CHECK(!deterministic, \"this kernel variant predates the deterministic dQ "
             "kernel\");") + c[j + 3:]
open(d + "/flash_api.cu", "w").write(c)
PY
    echo "[variants] .variants/$name: flash_backward's deterministic parameter added to its host API (refuses true)"
  fi
  echo "[variants] .variants/$name <- kernels/flash at $(git rev-parse --short "$rev")"
done
