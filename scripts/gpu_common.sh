# Sourced by the device-machine scripts (gpu_check.sh, gpu_flash_check.sh, flash_tile_sweep.sh):
# the project root as working directory, $out for results ($OUT when set, else build-gpu/out),
# $b the build directory ($GPU_BUILD_DIR, else /tmp/sluice-build), Hopper kernels unless
# TORCH_CUDA_ARCH_LIST says otherwise, and gpu_build.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-build-gpu/out}
mkdir -p "$out"
b=${GPU_BUILD_DIR:-/tmp/sluice-build}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}

# gpu_build TAG [CMAKE_ARG...] [-- TARGET...]: configure (Release, Ninja) and build the targets
# (all without any), logs in $out/configureTAG.log and $out/buildTAG.log; on failure prints the
# errors and returns 1.
gpu_build() {
  local tag=$1
  shift
  local cmake_args=() targets=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cmake_args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  for t in "$@"; do targets+=(--target "$t"); done
  cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cmake_args[@]}" > "$out/configure$tag.log" 2>&1 ||
    { tail -30 "$out/configure$tag.log"; return 1; }
  cmake --build "$b" "${targets[@]}" > "$out/build$tag.log" 2>&1 ||
    { grep -E "error|FAILED" "$out/build$tag.log" | head -40; return 1; }
}
