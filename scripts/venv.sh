#!/usr/bin/env bash
# Create or reuse the project virtual environment (.venv) and install wm-video with its extras.
# Torch goes in first: on CPU machines the 2.13.0 CPU wheel (set TORCH_SPEC to choose another build, e.g. on
# GPU nodes "torch==2.13.0 --index-url <your CUDA index>"); then `pip install -e .[dev,sim]` keeps it.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev,sim}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.wm-video-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) $EXTRAS $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH_SPEC
fi
echo "installing wm-video[$EXTRAS]"
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
echo "$want" > "$stamp"
