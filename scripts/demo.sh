#!/usr/bin/env bash
# Fresh machine -> trained Video Swin: install swinkit (torch pinned to the local CPU build 2.13.0,
# so no CUDA build is pulled), then run the end-to-end demo on its embedded synthetic dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e .
# swinkit's CPU kernels (about 30 seconds, once); without a compiler swinkit uses its PyTorch paths
python3 -m swinkit.tools.build_kernels || true
python3 -m swinkit demo "$@"
