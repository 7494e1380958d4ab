#!/usr/bin/env bash
# Build .bench-venv: a separate virtual environment holding a registry (PyPI) torch build with
# matching torchvision, plus timm, swinkit and its other dependencies, so that swinkit and the anchors (timm Swin-T,
# torchvision swin_t / swin3d_t) can be timed in one process. The project's own environment and
# its CPU torch are never touched. The PyPI torch wheel for Linux carries CUDA libraries (a few
# GB to download); it runs on CPU just as well. GPU machines usually have torch, torchvision and
# timm installed already: there, run `python benchmarks/run.py` directly.
#
#   bash scripts/bench_env.sh            # create or update .bench-venv
#   .bench-venv/bin/python benchmarks/run.py --suite targets
#
# Versions can be overridden, e.g. TORCH_SPEC="==2.14.*" TORCHVISION_SPEC="==0.29.*" TIMM_SPEC="==1.0.31"
# (torchvision must be the release built for that torch: 0.29 <-> 2.14, 0.28 <-> 2.13).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-.bench-venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-==2.14.*}"
TORCHVISION_SPEC="${TORCHVISION_SPEC:-==0.29.*}"
TIMM_SPEC="${TIMM_SPEC:-}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

# torch and torchvision in one resolve, so that pip cannot pair torchvision with a newer torch.
"${PIP[@]}" "torch${TORCH_SPEC}" "torchvision${TORCHVISION_SPEC}"
"${PIP[@]}" "timm${TIMM_SPEC}" numpy safetensors pyyaml tqdm av pillow matplotlib ninja "torch${TORCH_SPEC}"
# swinkit itself, editable and without dependencies (torch must stay the one installed above).
"${PIP[@]}" --no-deps -e .

# swinkit's compiled CPU kernels for this torch (about 30 seconds, once)
"$VENV/bin/python" -m swinkit.tools.build_kernels
"$VENV/bin/python" - <<'EOF'
import torch, torchvision, timm, swinkit
print(f"bench env ready: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"timm {timm.__version__}, swinkit from {swinkit.__file__}")
EOF
