"""Hugging Face Space entry point: play a Yan world in the browser (see README.md).

The app lives in `diffusers_yan.space`; this file only loads the models and serves them: Yan-Sim models, and
causal Yan-Gen ones (with a prompt box), the kind read from each model folder. Locally, `yan play` does the same.
Settings come from environment variables (Space "Variables"): YAN_MODEL (a model folder or Hub repo id; default:
the model folders next to this file, from `scripts/build_space.py --model`, else the bundled model),
YAN_MAX_SESSIONS, YAN_IDLE_TIMEOUT, YAN_DEVICE, YAN_GEN_RESOLUTION (HxW of Yan-Gen worlds, as
`yan play --gen-resolution`), YAN_GEN_GUIDANCE_SCALE (of Yan-Gen worlds), YAN_GPU_SECONDS_PER_ACTION (ZeroGPU
only). A malformed value stops the app with a message naming the variable.
"""

import argparse
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

from diffusers_yan.commands.play import parse_gen_resolution  # noqa: E402
from diffusers_yan.space import SpaceConfig, build_app, load_manager, serve  # noqa: E402
from diffusers_yan.space.clip import build_clip_blocks  # noqa: E402
from diffusers_yan.space.zerogpu import DEFAULT_SECONDS_PER_ACTION  # noqa: E402


def setting(name, parse, default):
    """The Space variable `name` read with `parse`, or `default` when it is unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return parse(text)
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise ValueError(f"Space variable {name}={text!r} is malformed: {e}") from None


here = os.path.dirname(os.path.abspath(__file__))
# on ZeroGPU, "cuda" is ZeroGPU's emulated device: the weights go to the lent GPU at each call
device = os.environ.get("YAN_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
defaults = SpaceConfig()
try:
    max_sessions = setting("YAN_MAX_SESSIONS", int, defaults.max_sessions)
    config = SpaceConfig(
        max_sessions=max_sessions,
        max_worlds=max(defaults.max_worlds, max_sessions),
        idle_timeout=setting("YAN_IDLE_TIMEOUT", float, defaults.idle_timeout),
        gen_resolution=setting("YAN_GEN_RESOLUTION", parse_gen_resolution, defaults.gen_resolution),
        gen_guidance_scale=setting("YAN_GEN_GUIDANCE_SCALE", float, defaults.gen_guidance_scale),
    )
except ValueError as e:  # a value of the right type out of range, e.g. YAN_GEN_GUIDANCE_SCALE=0.5
    raise ValueError(f"A Space variable (YAN_*) is out of range: {e}") from None
shipped = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(here, "models", "*", "model_index.json")))
models = [os.environ["YAN_MODEL"]] if os.environ.get("YAN_MODEL") else shipped or None
manager = load_manager(models, config, device=device)
if ZEROGPU:
    # no GPU between calls, so no live game loop: the request/response clip mode alone, served by Gradio's own
    # launch(), which runs ZeroGPU's start-up hook
    seconds_per_action = setting("YAN_GPU_SECONDS_PER_ACTION", float, DEFAULT_SECONDS_PER_ACTION)
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
