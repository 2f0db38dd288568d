#!/usr/bin/env bash
# Per-kernel SASS statistics of one .cu without a GPU: total instructions, HMMA, MUFU
# (exp/rcp units), local-memory accesses (spills) and BSSY (divergent-branch regions).
# cuobjdump and nvdisasm come from NVIDIA's pip wheels (the local toolkit lacks them), cached
# in build/sass-tools. Usage: scripts/sass_report.sh [--loops] kernels/flash/flash_fwd_hdim128_bf16.cu [90a] [nvcc flags...]
# --loops: per kernel, the hot loops instead (a backward branch enclosing at least 16 HMMA):
# instructions, HMMA, local-memory accesses and BSSY (divergent regions) from the branch target
# to the branch, i.e. one iteration's code including its rarely taken paths.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
loops=0; if [ "${1:-}" = --loops ]; then loops=1; shift; fi
src=$1; arch=${2:-90a}; shift $(( $# >= 2 ? 2 : 1 ))
tools="$root/build/sass-tools"
if [ ! -x "$tools/bin/cuobjdump" ] || [ ! -x "$tools/bin/nvdisasm" ]; then
  mkdir -p "$tools/wheels" "$tools/bin"
  "$root/.venv/bin/pip" download -q --no-deps -d "$tools/wheels" nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
  for w in "$tools"/wheels/*.whl; do (cd "$tools/wheels" && unzip -qo "$w"); done
  for t in cuobjdump nvdisasm; do cp "$(find "$tools/wheels" -name $t -type f | head -1)" "$tools/bin/$t"; chmod +x "$tools/bin/$t"; done
fi
torch_inc=$("$root/.venv/bin/python" -W ignore -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
obj=$(mktemp --suffix=.o)
trap 'rm -f "$obj"' EXIT
"${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}" -std=c++17 -O3 --expt-relaxed-constexpr -DFMT_HEADER_ONLY \
  -I"$root/kernels" -I"$root/include" -isystem "$torch_inc" -isystem "$torch_inc/torch/csrc/api/include" \
  -gencode "arch=compute_$arch,code=sm_$arch" "$@" -c "$root/$src" -o "$obj"
if [ $loops = 1 ]; then
  PATH="$tools/bin:$PATH" cuobjdump -sass "$obj" | awk '
    function hex(x,   i, v) { v = 0; x = tolower(x); sub(/^0x/, "", x)
      for (i = 1; i <= length(x); i++) v = v * 16 + index("0123456789abcdef", substr(x, i, 1)) - 1; return v }
    /Function :/ { print $3; n = 0 }
    /^ +\/\*[0-9a-f]+\*\// { a = $1; gsub(/[^0-9a-f]/, "", a); n++; A[n] = hex(a); L[n] = $0
      if ($0 ~ /BRA/ && match($0, /0x[0-9a-f]+/)) { t = hex(substr($0, RSTART, RLENGTH)); if (t < A[n]) {
        s = n; while (s > 1 && A[s - 1] >= t) s--
        h = 0; l = 0; b = 0
        for (i = s; i <= n; i++) { if (L[i] ~ /HMMA/) h++; if (L[i] ~ /LDL|STL/) l++; if (L[i] ~ /BSSY/) b++ }
        if (h >= 16) printf "  loop %x..%x: %d instr, %d hmma, %d local, %d bssy\n", t, A[n], n - s + 1, h, l, b } } }'
  exit 0
fi
PATH="$tools/bin:$PATH" cuobjdump -sass "$obj" | awk '
  /Function :/ { f = $3 }
  /^ +\/\*[0-9a-f]+\*\// { n[f]++; if (/HMMA/) h[f]++; if (/MUFU/) m[f]++; if (/STL|LDL/) l[f]++; if (/BSSY/) b[f]++ }
  END { printf "%7s %6s %6s %6s %6s  %s\n", "instr", "hmma", "mufu", "local", "bssy", "kernel";
        for (k in n) printf "%7d %6d %6d %6d %6d  %s\n", n[k], h[k], m[k], l[k], b[k], k }'
