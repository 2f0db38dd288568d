#!/usr/bin/env bash
# Sets up if needed, builds, and runs the test suite. Extra arguments go to ctest,
# e.g. scripts/test.sh -L cpu   or   scripts/test.sh -R Config
# Labels: cpu (runs anywhere), gpu (skips without a CUDA device), dist.
# Tests run CTEST_JOBS at a time (default: the cores); the multi-rank ones alone (tests/CMakeLists.txt).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --timeout 600 -j "${CTEST_JOBS:-$(nproc)}" "$@"
