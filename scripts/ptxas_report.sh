#!/usr/bin/env bash
# Registers and spills of every kernel in one .cu, without a GPU: compiles it for one
# architecture with `ptxas -v` (nvcc and the project venv's LibTorch headers needed).
# Usage: scripts/ptxas_report.sh kernels/flash/flash_fwd_hdim128_bf16.cu [90a] [extra nvcc flags...]
#   e.g. scripts/ptxas_report.sh kernels/flash/flash_fwd_hdim128_bf16.cu 90a -DSLUICE_FWD_WARPS=8
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$1; arch=${2:-90a}; shift $(( $# >= 2 ? 2 : 1 ))
torch_inc=$("$root/.venv/bin/python" -W ignore -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
"$nvcc" -std=c++17 -O3 --expt-relaxed-constexpr -DFMT_HEADER_ONLY -I"$root/kernels" -I"$root/include" \
  -isystem "$torch_inc" -isystem "$torch_inc/torch/csrc/api/include" \
  -gencode "arch=compute_$arch,code=sm_$arch" -Xptxas -v "$@" -c "$root/$src" -o /dev/null 2>&1 |
  grep -E "error|Compiling entry|registers|spill" | sed -e 's/_ZN6sluice5flash//' | cut -c1-200
