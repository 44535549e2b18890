"""The Yan-Sim training scripts, end to end on a tiny real Doom dataset: train, save, reload, kill and resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk

from diffusers_yan import AutoencoderKLYan, YanSimPipeline
from diffusers_yan.cli import main as yan


ROOT = Path(__file__).resolve().parents[1]
VAE_SCRIPT = ROOT / "training_examples" / "train_yan_sim_vae.py"
SIM_SCRIPT = ROOT / "training_examples" / "train_yan_sim.py"
TINY_VAE = ["--block_out_channels", "8,16,16", "--norm_num_groups", "4", "--latent_channels", "4"]
TINY_UNET = [
    "--block_out_channels", "16,32", "--norm_num_groups", "4", "--attention_head_dim", "8",
    "--action_embed_dim", "16", "--temporal_cache_size", "8",
]  # fmt: skip


@pytest.fixture(scope="module")
def doom_data(tmp_path_factory):
    """A few hundred real frames from the my_way_home scenario."""
    out = tmp_path_factory.mktemp("data") / "mwh"
    rc = yan(
        ["collect", "--scenario", "my_way_home", "--episodes", "2", "--agent", "random", "--seed", "0",
         "--resolution", "64x48", "--max-steps", "120", "--workers", "1", "--filters", "none", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    return out


def run_script(script, *args, check=True, **kw):
    cmd = [sys.executable, str(script), *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{script.name} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="module")
def trained_vae(doom_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    res = run_script(
        VAE_SCRIPT, "--dataset_dir", doom_data, "--output_dir", out, "--max_train_steps", 2, "--train_batch_size", 2,
        "--checkpointing_steps", 1, "--logging_steps", 1, *TINY_VAE,
    )  # fmt: skip
    assert "perceptual" in res.stderr  # the script says which perceptual term it uses (LPIPS is not available offline)
    return out


def test_vae_script_trains_saves_and_reloads(trained_vae):
    vae = AutoencoderKLYan.from_pretrained(trained_vae)
    assert vae.config.latent_channels == 4 and vae.config.spatial_compression_ratio == 8
    assert (trained_vae / "README.md").is_file()
    ckpts = sorted(p.name for p in trained_vae.glob("checkpoint-*"))
    assert ckpts == ["checkpoint-1", "checkpoint-2"]
    assert not list(trained_vae.glob(".tmp-*"))  # no half-written checkpoint left behind


def test_sim_script_trains_saves_and_reloads(doom_data, trained_vae, tmp_path):
    out = tmp_path / "sim"
    run_script(
        SIM_SCRIPT, "--dataset_dir", doom_data, "--vae_path", trained_vae, "--output_dir", out,
        "--clip_latent_frames", 6, "--max_train_steps", 2, "--train_batch_size", 2, "--checkpointing_steps", 2,
        "--validation_steps", 2, "--validation_rollout_frames", 3, "--use_ema", "--action_dropout", 0.5,
        "--null_action", "mean", *TINY_UNET,
    )  # fmt: skip
    pipe = YanSimPipeline.from_pretrained(out)
    assert pipe.action_space.dim == 8 and pipe.resolution == (48, 64)
    # the null action is the data's mean action: a frequency per button, saved with the UNet
    info = load_from_disk(str(doom_data))
    expected = np.asarray(info["action"], dtype=np.float64).mean(axis=0)
    np.testing.assert_allclose(pipe.unet.config.null_action, expected, atol=1e-9)
    guided = pipe(image=torch.rand(3, 48, 64), actions=["MOVE_FORWARD"], guidance_scale=2.0, output_type="np")
    assert guided.frames.shape == (1, 2, 48, 64, 3)
    card = (out / "README.md").read_text()
    assert "diffusers-yan" in card and "train_yan_sim.py" in card
    assert (out / "validation-2.mp4").is_file()
    frames = pipe(image=torch.rand(3, 48, 64), actions=["MOVE_FORWARD"] * 2, output_type="np").frames
    assert frames.shape == (1, 4, 48, 64, 3)


def test_killed_run_resumes_from_latest_checkpoint(doom_data, trained_vae, tmp_path):
    out = tmp_path / "sim-resume"
    args = [
        "--dataset_dir", doom_data, "--vae_path", trained_vae, "--output_dir", out, "--clip_latent_frames", 6,
        "--train_batch_size", 1, "--checkpointing_steps", 1, "--checkpoints_total_limit", 3, "--validation_steps", 0,
        *TINY_UNET,
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(SIM_SCRIPT), *map(str, args), "--max_train_steps", "10000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (out / "checkpoint-3").is_dir():
            time.sleep(0.2)
        assert (out / "checkpoint-3").is_dir(), "the run never reached its third checkpoint"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    res = run_script(SIM_SCRIPT, *args, "--max_train_steps", done + 2, "--resume_from_checkpoint", "latest")
    assert f"at step {done}" in res.stderr
    assert (out / f"checkpoint-{done + 2}").is_dir()
    YanSimPipeline.from_pretrained(out)


def test_scripts_refuse_bad_datasets(tmp_path, trained_vae):
    res = run_script(VAE_SCRIPT, "--dataset_dir", tmp_path / "missing", "--output_dir", tmp_path / "o", check=False)
    assert res.returncode != 0 and "does not exist" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run_script(
        SIM_SCRIPT, "--dataset_dir", tmp_path / "empty", "--vae_path", trained_vae, "--output_dir", tmp_path / "o",
        check=False,
    )  # fmt: skip
    assert res.returncode != 0 and "not a finished `yan collect` dataset" in res.stderr


def test_push_to_hub_uploads_the_output_folder_without_checkpoints(monkeypatch, tmp_path):
    import huggingface_hub

    from diffusers_yan.training_utils import push_output_to_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)))
    push_output_to_hub(str(tmp_path), "me/yan-sim-test", token="t")
    assert calls[0] == ("create", "me/yan-sim-test", {"exist_ok": True, "token": "t"})
    upload = calls[1][1]
    assert upload["folder_path"] == str(tmp_path) and upload["repo_id"] == "me/yan-sim-test"
    assert "checkpoint-*" in upload["ignore_patterns"]


def test_push_to_hub_flag_needs_a_repo_id(tmp_path):
    res = run_script(
        VAE_SCRIPT, "--dataset_dir", tmp_path, "--output_dir", tmp_path / "o", "--push_to_hub", check=False
    )
    assert res.returncode != 0 and "--hub_model_id" in res.stderr


def test_action_dropout_replaces_a_suffix_with_the_null_action():
    sys.path.insert(0, str(SIM_SCRIPT.parent))
    try:
        from train_yan_sim import drop_actions
    finally:
        sys.path.remove(str(SIM_SCRIPT.parent))
    actions = torch.ones(2000, 6, 3)
    null = torch.tensor([0.5, 0.25, 0.0])
    out = drop_actions(actions, null, 0.3, torch.Generator().manual_seed(0))
    dropped = (out != 1).any(-1)  # [B, F]
    assert not dropped[:, 0].any()  # the first (start) frame always keeps its action
    # a dropped clip is real up to some frame and null from there on
    first = dropped.float().argmax(1)
    rows = dropped.any(1)
    assert torch.equal(dropped[rows], torch.arange(6)[None] >= first[rows][:, None])
    assert torch.equal(out[dropped], null.expand(int(dropped.sum()), 3))
    assert abs(rows.float().mean().item() - 0.3) < 0.04
    assert torch.equal(drop_actions(actions, null, 0.0, torch.Generator()), actions)
