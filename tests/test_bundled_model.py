"""The bundled `yan-sim-doom` model: a Hub-ready folder that loads offline and plays."""

import json
import os

import numpy as np
import torch
from PIL import Image

from diffusers_yan import BUNDLED_MODELS, YanSimPipeline


def test_bundled_model_is_a_hub_ready_folder():
    path = BUNDLED_MODELS["yan-sim-doom"]
    index = json.load(open(os.path.join(path, "model_index.json")))
    assert index["_class_name"] == "YanSimPipeline"
    assert index["unet"] == ["diffusers_yan.models.unets.unet_yan_sim", "YanSimUNetModel"]
    card = open(os.path.join(path, "README.md")).read()
    assert card.startswith("---\nlibrary_name: diffusers") and "## Evaluation against the game engine" in card
    assert "yan collect" in card and "train_yan_sim.py" in card  # the commands that produced it
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    assert size <= 50 * 2**20
    assert not any(f.endswith((".bin", ".pkl", ".pt")) for _, _, files in os.walk(path) for f in files)


def test_bundled_model_plays_from_its_start_frames():
    pipe = YanSimPipeline.from_pretrained(BUNDLED_MODELS["yan-sim-doom"])
    pipe.set_progress_bar_config(disable=True)
    assert len(pipe.start_frames) >= 1 and pipe.resolution == (48, 64)
    start = Image.open(pipe.start_frames[0])
    out = pipe(image=start, actions=["MOVE_FORWARD"] * 3, generator=torch.Generator().manual_seed(0), output_type="np")
    frames = out.frames[0]
    assert frames.shape == (3, 48, 64, 3) and np.isfinite(frames).all()
    # the first generated frame still looks like the start frame (a trained model, not noise)
    real = np.asarray(start.convert("RGB"), dtype=np.float32) / 255
    mse = float(((frames[0] - real) ** 2).mean())
    assert 10 * np.log10(1 / mse) > 15
