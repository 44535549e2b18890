"""Hugging Face Space entry point: play a Yan-Sim world in the browser (see README.md).

The app lives in `diffusers_yan.space`; this file only loads the model and serves it. Locally, `yan play` does
the same. Settings come from environment variables (Space "Variables"): YAN_MODEL (a model folder or Hub repo id;
default: the model folders next to this file, from `scripts/build_space.py --model`, else the bundled model),
YAN_MAX_SESSIONS, YAN_IDLE_TIMEOUT, YAN_DEVICE, YAN_GPU_SECONDS_PER_ACTION (ZeroGPU only).
"""

import glob
import os

import torch


# ZeroGPU hardware (a GPU lent per call), detected as the `spaces` package detects it
ZEROGPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
if ZEROGPU:
    if torch.version.cuda is None:
        raise RuntimeError(
            "ZeroGPU needs a CUDA build of torch, and this Space installed the CPU build: rebuild it with"
            " `python scripts/build_space.py --hardware gpu --out DIR` and upload DIR again."
        )
    # before anything initialises CUDA: `spaces` emulates CUDA in this process and lends a real GPU per call
    import spaces  # noqa: F401

from diffusers_yan.space import SpaceConfig, build_app, load_manager, serve  # noqa: E402
from diffusers_yan.space.clip import build_clip_blocks  # noqa: E402
from diffusers_yan.space.zerogpu import DEFAULT_SECONDS_PER_ACTION  # noqa: E402


here = os.path.dirname(os.path.abspath(__file__))
# on ZeroGPU, "cuda" is ZeroGPU's emulated device: the weights go to the lent GPU at each call
device = os.environ.get("YAN_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
config = SpaceConfig(
    max_sessions=int(os.environ.get("YAN_MAX_SESSIONS", "2")),
    idle_timeout=float(os.environ.get("YAN_IDLE_TIMEOUT", "300")),
)
shipped = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(here, "models", "*", "model_index.json")))
models = [os.environ["YAN_MODEL"]] if os.environ.get("YAN_MODEL") else shipped or None
manager = load_manager(models, config, device=device)
if ZEROGPU:
    # no GPU between calls, so no live game loop: the request/response clip mode alone, served by Gradio's own
    # launch(), which runs ZeroGPU's start-up hook
    seconds_per_action = float(os.environ.get("YAN_GPU_SECONDS_PER_ACTION", DEFAULT_SECONDS_PER_ACTION))
    app = build_clip_blocks(manager, zerogpu=True, gpu_seconds_per_action=seconds_per_action)
else:
    app = build_app(manager)

if __name__ == "__main__":
    # Spaces route traffic to port 7860 on every interface
    host, port = os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), int(os.environ.get("PORT", "7860"))
    if ZEROGPU:
        app.launch(server_name=host, server_port=port)
    else:
        serve(app, host=host, port=port)
