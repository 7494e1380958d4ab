#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
# torch is pinned to the local CPU build (2.13.0) first, so no CUDA build is ever pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[test]"
python3 -m pytest -q "$@"
