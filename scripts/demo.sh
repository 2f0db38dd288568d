#!/usr/bin/env bash
# Sets up if needed, then trains configs/tiny.yaml (a ~1M-parameter model, a few minutes on a
# CPU, faster on a GPU) and prints where the results are.
# Text: DEMO_TEXT=path/to/file.txt, else the Python standard library's sources.
# Extra arguments go to `sluice train`, e.g. scripts/demo.sh --set train.steps=200
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
build_dir=${BUILD_DIR:-build}
text=${DEMO_TEXT:-}
if [ -z "$text" ]; then
  text="$build_dir/demo-corpus.txt"
  if [ ! -s "$text" ]; then
    stdlib=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
    find "$stdlib" -maxdepth 1 -name '*.py' | LC_ALL=C sort | xargs cat > "$text"
    echo "[demo] corpus: $(du -h "$text" | cut -f1) of Python standard-library sources -> $text" >&2
  fi
fi
"$build_dir/sluice" train configs/tiny.yaml --set "data.train=$text" "$@"
