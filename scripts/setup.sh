#!/usr/bin/env bash
# Set up diffusers-yan in ./.venv (idempotent: a second run only checks what is installed).
#
#   bash scripts/setup.sh            # the package, the data engine and the Space
#   bash scripts/setup.sh test       # ... plus everything the test suite needs
#
# torch: on a machine without an NVIDIA GPU we install the CPU build `torch==2.13.0` before anything else,
# so that the package's ordinary `torch>=2.4` requirement is already met and pip never pulls several GB of
# CUDA packages. Set YAN_TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu) if your pip does not
# find a CPU wheel by itself. With an NVIDIA GPU, torch is installed as an ordinary dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-space}"
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[setup] NVIDIA GPU found: torch comes in as an ordinary dependency"
    else
        echo "[setup] no NVIDIA GPU: installing the CPU build torch==2.13.0"
        if [ -n "${YAN_TORCH_INDEX_URL:-}" ]; then
            "$VPY" -m pip install -q "torch==2.13.0" --index-url "$YAN_TORCH_INDEX_URL"
        else
            "$VPY" -m pip install -q "torch==2.13.0"
        fi
    fi
fi

echo "[setup] installing diffusers-yan[$EXTRAS] (editable)"
"$VPY" -m pip install -q -e ".[$EXTRAS]"
if "$VPY" -c "import torchvision" >/dev/null 2>&1; then
    echo "[setup] warning: torchvision is installed; a CUDA-only torchvision breaks torch imports on CPU machines" >&2
fi
echo "[setup] done: $("$VPY" -c 'import torch; print("torch", torch.__version__)')"
