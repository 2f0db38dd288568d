#!/usr/bin/env bash
# Sets up everything Sluice needs and builds it. Idempotent and quick when already done:
#   1. Debian packages (only the missing ones are installed),
#   2. .venv with torch==2.11.0 (LibTorch comes from this wheel),
#   3. CMake + Ninja build in build/ (ccache; CUDA kernels whenever nvcc is present).
# Environment: BUILD_DIR (default build), TORCH_CUDA_ARCH_LIST (default "8.0;9.0"),
#              SLUICE_SKIP_APT=1 to skip the package step.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build_dir=${BUILD_DIR:-build}
say() { echo "[setup] $*" >&2; }

# --- 1. Debian packages ---
pkgs=(cmake ninja-build ccache g++ python3 python3-venv
      libyaml-cpp-dev libspdlog-dev libgtest-dev libgmock-dev googletest
      libsentencepiece-dev sentencepiece libcli11-dev nlohmann-json3-dev libbenchmark-dev
      libgloo-dev zlib1g-dev chromium  # gloo: c10d ProcessGroupGloo headers; zlib and chromium: test_report renders the HTML report headless
      clang-14 libclang-rt-14-dev)     # ASan, UBSan and libFuzzer for scripts/sanitize.sh and scripts/fuzz.sh
if [ "${SLUICE_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    # Installed python3 interpreters (pyenv, conda) make the Debian python3 packages optional.
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# --- 2. Python venv with the torch wheel (LibTorch headers, libraries and CMake config) ---
torch_ok() { .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.11.0") else 1)' 2>/dev/null; }
if ! torch_ok; then
  say "creating .venv with torch==2.11.0 (about 4 GB with its CUDA libraries)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check torch==2.11.0
  torch_ok || { say "torch 2.11.0 did not install into .venv"; exit 1; }
fi
# tensorboard: its own reader checks RUN_DIR/tb/ in the tests (docs/tensorboard.md);
# transformers: loads `sluice export hf` directories in the tests (docs/interop.md; 5.25 needs a
# `kernels` release PyPI does not have yet); sentencepiece + protobuf: its LlamaTokenizer reads
# an exported tokenizer.model with them.
py_pkgs=(tensorboard==2.21.0 transformers==5.24.0 sentencepiece==0.2.3 protobuf==7.36.2)
if ! .venv/bin/python -c 'import tensorboard, transformers, safetensors, sentencepiece, google.protobuf' 2>/dev/null; then
  say "installing into .venv: ${py_pkgs[*]}"
  .venv/bin/pip install -q --disable-pip-version-check "${py_pkgs[@]}"
fi

# --- 3. Configure and build ---
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
if [ ! -f "$build_dir/build.ninja" ]; then
  say "configuring $build_dir"
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache >/dev/null
fi
say "building $build_dir"
cmake --build "$build_dir"
