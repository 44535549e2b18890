"""Hugging Face Space entry point: play a Yan-Sim world in the browser (see README.md).

The app lives in `diffusers_yan.space`; this file only loads the model and serves it. Locally, `yan play` does
the same. Settings come from environment variables (Space "Variables"): YAN_MODEL (a model folder or Hub repo id;
default: the bundled model), YAN_MAX_SESSIONS, YAN_IDLE_TIMEOUT, YAN_DEVICE.
"""

import os

import torch

from diffusers_yan.space import SpaceConfig, build_app, load_manager, serve


device = os.environ.get("YAN_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
config = SpaceConfig(
    max_sessions=int(os.environ.get("YAN_MAX_SESSIONS", "2")),
    idle_timeout=float(os.environ.get("YAN_IDLE_TIMEOUT", "300")),
)
models = [os.environ["YAN_MODEL"]] if os.environ.get("YAN_MODEL") else None
app = build_app(load_manager(models, config, device=device))

if __name__ == "__main__":
    # Spaces route traffic to port 7860 on every interface
    serve(app, host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"), port=int(os.environ.get("PORT", "7860")))
