"""Evaluation: metric sanity, horizon bookkeeping on a crafted oracle pipeline, `yan evaluate` end to end on a tiny
real Doom dataset, the inverse-dynamics training script, and bad input."""

import importlib.util
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from diffusers_yan import ActionSpace, AutoencoderKLYan, YanSimPipeline, YanSimUNetModel
from diffusers_yan.cli import main as yan
from diffusers_yan.evaluation import (
    PSNR_CAP_DB,
    EvalWindow,
    YanInverseDynamicsModel,
    copy_last_frames,
    evaluate_windows,
    frame_psnr,
    frame_ssim,
    frechet_distance,
    idm_accuracy,
    load_fvd_detector,
    parse_horizons,
    select_starts,
    step_actions,
    step_frames,
    summarize,
    teacher_forced_starts,
)


ROOT = Path(__file__).resolve().parents[1]
IDM_SCRIPT = ROOT / "training_examples" / "train_inverse_dynamics.py"


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core box, two threads spin against the other jobs and run ~50x slower
    on these tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def doom_data(tmp_path_factory):
    """A few hundred real frames from the my_way_home scenario at 64x48."""
    out = tmp_path_factory.mktemp("data") / "mwh"
    rc = yan(
        ["collect", "--scenario", "my_way_home", "--episodes", "2", "--agent", "random", "--seed", "0",
         "--resolution", "64x48", "--max-steps", "120", "--workers", "1", "--filters", "none", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0
    return out


def tiny_pipe(sample_size=(6, 8), action_space=None) -> YanSimPipeline:
    torch.manual_seed(0)
    vae = AutoencoderKLYan(
        latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
        spatial_compression_ratio=8, temporal_compression_ratio=2,
    )  # fmt: skip
    unet = YanSimUNetModel(
        sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        attention_levels=(True, True), attention_head_dim=8, norm_num_groups=4, action_space=action_space,
        action_embed_dim=16, temporal_cache_size=6,
    )  # fmt: skip
    scheduler = DDIMScheduler(
        prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True, clip_sample=False
    )
    return YanSimPipeline(vae=vae.eval(), unet=unet.eval(), scheduler=scheduler)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipe().save_pretrained(out)  # 48x64 frames, 2 frames per action, the Doom buttons
    return out


def _load_script():
    spec = importlib.util.spec_from_file_location("train_inverse_dynamics", IDM_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def idm_dir(doom_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("idm")
    script = _load_script()
    script.main(
        script.parse_args(
            [
                "--dataset_dir",
                str(doom_data),
                "--output_dir",
                str(out),
                "--max_train_steps",
                "2",
                "--train_batch_size",
                "4",
                "--checkpointing_steps",
                "1",
                "--logging_steps",
                "1",
                "--block_out_channels",
                "8,16",
            ]
        )  # fmt: skip
    )
    return out


# ---------------------------------------------------------------------------------------------- metrics
def test_metric_sanity():
    a = torch.rand(3, 3, 48, 64)
    assert torch.equal(frame_psnr(a, a), torch.full((3,), PSNR_CAP_DB))
    assert torch.allclose(frame_ssim(a, a), torch.ones(3), atol=1e-5)
    c = (a + 0.1 * torch.sign(torch.randn_like(a))).clamp(0, 1)
    assert (frame_ssim(c, a) < 1).all() and (frame_psnr(c, a) < PSNR_CAP_DB).all()
    # known MSE: a constant offset of 0.1 everywhere is 20 dB
    x = torch.full((2, 3, 16, 16), 0.5)
    assert torch.allclose(frame_psnr(x + 0.1, x), torch.full((2,), 20.0), atol=1e-4)
    # small frames get a shrunk (odd) SSIM window instead of an error
    assert torch.allclose(frame_ssim(x[..., :8, :8], x[..., :8, :8]), torch.ones(2), atol=1e-5)
    assert summarize([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "count": 2}
    assert summarize([])["count"] == 0
    with pytest.raises(ValueError, match="same shape"):
        frame_psnr(a, a[:2])


def test_copy_last_baseline_and_frechet():
    last = torch.rand(3, 8, 8)
    rep = copy_last_frames(last, 4)
    assert rep.shape == (4, 3, 8, 8) and all(torch.equal(f, last) for f in rep)
    f = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(f, f)) < 1e-6
    # a pure mean shift of 1 in each of 5 dims: ||mu_a - mu_b||^2 = 5
    assert frechet_distance(f + 1, f) == pytest.approx(5.0, abs=1e-6)


def test_idm_accuracy_maths():
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]]).float()
    pred = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1]]).float()
    acc = idm_accuracy(pred, labels, ["A", "B", "C"])
    assert acc["exact_match"] == 0.5 and acc["per_button"] == {"A": 1.0, "B": 0.75, "C": 0.75}
    assert acc["per_button_mean"] == pytest.approx(2.5 / 3) and acc["num_pairs"] == 4
    # A: held twice, both seen; B: held twice, one seen; C: never held, called held once in four
    assert acc["per_button_rates"]["A"] == {"held": 0.5, "hit_rate": 1.0, "false_alarm_rate": 0.0}
    assert acc["per_button_rates"]["B"] == {"held": 0.5, "hit_rate": 0.5, "false_alarm_rate": 0.0}
    assert acc["per_button_rates"]["C"] == {"held": 0.0, "hit_rate": None, "false_alarm_rate": 0.25}


@pytest.mark.parametrize("module", ["metrics", "inverse_dynamics"])
def test_docstring_examples_run(module):
    import doctest
    import importlib
    import re

    doc = importlib.import_module(f"diffusers_yan.evaluation.{module}").__doc__
    code = re.search(r"```py\n(.*?)```", doc, re.S).group(1)
    runner = doctest.DocTestRunner()
    runner.run(doctest.DocTestParser().get_doctest(code, {}, module, None, 0))
    assert runner.summarize(verbose=False).failed == 0


# ---------------------------------------------------------------------------------------------- bookkeeping
def test_step_indices():
    # r = 3: step k covers window frames 1+3(k-1) .. 3k; teacher forcing starts from the frame just before
    assert [step_frames(k, 3) for k in (1, 2, 3)] == [slice(1, 4), slice(4, 7), slice(7, 10)]
    assert teacher_forced_starts(3, 3) == [0, 3, 6]
    acts = torch.arange(10).float()[:, None]
    assert step_actions(acts, 3, 3).flatten().tolist() == [1, 4, 7]  # the action that led into each step's first frame
    assert parse_horizons("32, 1,8,8") == (1, 8, 32)
    # starts: per episode, only where a window fits, first `episodes` episodes by id
    eps = np.array([5] * 10 + [2] * 10)
    starts = select_starts(list(range(0, 6)) + list(range(10, 16)), eps, episodes=1, starts_per_episode=3, seed=0)
    assert len(starts) == 3 and all(10 <= s < 16 for s in starts) and starts == sorted(starts)


R = 3  # frames per action of the crafted pipeline
SPACE = ActionSpace()  # the 8 Doom buttons


def _code(i: int) -> torch.Tensor:
    """Window row i's action: the bits of i on the 8 buttons (so the fake pipeline can read back which row it got)."""
    return torch.tensor([(i >> b) & 1 for b in range(8)], dtype=torch.float32)


def crafted_window(base: int, length: int) -> EvalWindow:
    """Window frame j is a flat grey of level (base + j) / 255: frames identify themselves by their value."""
    levels = (base + torch.arange(length)).float() / 255
    frames = levels[:, None, None, None].expand(length, 3, 12, 16).clone()
    return EvalWindow(frames=frames, actions=torch.stack([_code(j) for j in range(length)]), episode_id=base)


class OraclePipe:
    """Reads the start frame's index from its grey level and returns the true next frames; records every call."""

    frames_per_action, resolution, action_space = R, (12, 16), SPACE

    def __init__(self):
        self.calls = []

    def __call__(self, image, actions, num_inference_steps, generator, output_type):
        assert output_type == "np"
        levels = (image.mean(dim=(1, 2, 3)) * 255).round().long()  # [B]
        rows = [[int((a * 2 ** torch.arange(8)).sum()) for a in world] for world in actions]
        self.calls.append({"levels": levels.tolist(), "action_rows": rows})
        n = actions.shape[1] * R
        out = (levels[:, None] + 1 + torch.arange(n)[None]).float() / 255  # [B, n]
        frames = out[:, :, None, None, None].expand(-1, -1, 12, 16, 3)
        return SimpleNamespace(frames=frames.numpy())


def test_horizon_bookkeeping_on_an_oracle():
    H, base = 4, 10
    windows = [crafted_window(base, 1 + H * R), crafted_window(100, 1 + H * R)]
    pipe = OraclePipe()
    lpips = lambda p, t: (p - t).abs().mean(dim=(1, 2, 3))  # noqa: E731 - a stand-in perceptual metric
    res = evaluate_windows(pipe, windows, horizons=(1, 2, 4), batch_size=3, lpips_fn=lpips, show_progress=False)

    # the oracle is exact, so any misalignment of targets would show as a finite PSNR
    for h in ("1", "2", "4"):
        assert res["horizons"][h]["psnr"]["model"]["mean"] == PSNR_CAP_DB
        assert res["horizons"][h]["lpips"]["model"]["mean"] == 0.0
    # copy-last: the start frame vs frames j = (h-1)R+1 .. hR levels later -> PSNR 20 log10(255 / j)
    for h in (2, 4):
        expected = np.mean([20 * math.log10(255 / j) for j in range((h - 1) * R + 1, h * R + 1)])
        got = res["horizons"][str(h)]["psnr"]["copy_last"]
        assert got["mean"] == pytest.approx(expected, abs=1e-3) and got["count"] == 2 * R
        assert res["horizons"][str(h)]["mode"] == "autoregressive"
    # horizon 1 is teacher-forced: every step starts from the real frame just before it, so the baseline is always
    # 1..R levels away, and there are H predictions per window
    tf = res["horizons"]["1"]
    assert tf["mode"] == "teacher_forced" and tf["num_predictions"] == 2 * H
    expected = np.mean([20 * math.log10(255 / j) for j in range(1, R + 1)])
    assert tf["psnr"]["copy_last"]["mean"] == pytest.approx(expected, abs=1e-3)
    # the calls: window 0's rollout from frame 0 with step actions from rows 1, 1+R, ...; then its teacher-forced
    # batches (batch_size 3) from frames 0, R, 2R, ... with one action each
    step_rows = [1 + (k - 1) * R for k in range(1, H + 1)]
    rollout, tf1, tf2 = pipe.calls[:3]
    assert rollout == {"levels": [base], "action_rows": [step_rows]}
    assert tf1["levels"] == [base + s for s in (0, R, 2 * R)] and tf1["action_rows"] == [[r] for r in step_rows[:3]]
    assert tf2["levels"] == [base + 3 * R] and tf2["action_rows"] == [[step_rows[3]]]
    assert len(pipe.calls) == 6
    # the rollout curve covers every step
    assert len(res["rollout_curve"]["psnr_model"]) == H


def test_playability_and_fvd_on_an_oracle(tmp_path):
    class Detector(torch.nn.Module):  # a stand-in I3D: per-frame grey levels as features
        def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
            return x.mean(dim=(1, 3, 4))

    path = tmp_path / "i3d.pt"
    torch.jit.script(Detector()).save(str(path))
    features, note = load_fvd_detector(str(path))
    assert features is not None and str(path) in note
    missing, note = load_fvd_detector(str(tmp_path / "none.pt"))
    assert missing is None and "FVD skipped" in note

    windows = [crafted_window(b, 1 + 4 * R) for b in (10, 60, 110)]
    idm = YanInverseDynamicsModel(block_out_channels=(8, 16))
    res = evaluate_windows(OraclePipe(), windows, horizons=(1, 4), idm=idm, fvd_features=features, show_progress=False)
    # generated pairs are the real pairs here, so the probe must agree exactly
    assert res["idm"]["rollout"] == res["idm"]["real"] == res["idm"]["teacher_forced"]
    assert res["idm"]["real"]["num_pairs"] == 3 * 4
    assert res["fvd"]["model"] == pytest.approx(0.0, abs=1e-6) and res["fvd"]["copy_last"] > 0


# ---------------------------------------------------------------------------------------------- end to end
def test_idm_script_trains_resumes_and_reloads(idm_dir, doom_data, caplog):
    idm = YanInverseDynamicsModel.from_pretrained(idm_dir)
    assert idm.action_space.dim == 8 and tuple(idm.config.sample_size) == (48, 64)
    assert sorted(p.name for p in idm_dir.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    held = json.loads((idm_dir / "heldout_accuracy.json").read_text())
    assert 0 <= held["exact_match"] <= 1 and held["num_pairs"] > 0
    # resume from the latest checkpoint and go one step further
    script = _load_script()
    with caplog.at_level(logging.INFO, logger="train_inverse_dynamics"):
        script.main(
            script.parse_args(
                [
                    "--dataset_dir",
                    str(doom_data),
                    "--output_dir",
                    str(idm_dir),
                    "--max_train_steps",
                    "3",
                    "--train_batch_size",
                    "4",
                    "--checkpointing_steps",
                    "1",
                    "--block_out_channels",
                    "8,16",
                    "--resume_from_checkpoint",
                    "latest",
                ]
            )  # fmt: skip
        )
    assert "at step 2" in caplog.text and "held-out accuracy" in caplog.text
    # every consecutive pair is used: 2 episodes of 120 frames, one held out whole
    assert "119 training pairs, 119 held-out pairs" in caplog.text
    assert (idm_dir / "checkpoint-3").is_dir()
    # accuracy on real pairs of the data
    from diffusers_yan.data import GameplayClipDataset

    clips = GameplayClipDataset(str(doom_data), clip_length=2, stride=1)
    batch = torch.utils.data.default_collate([clips[i] for i in range(0, 64, 4)])
    pred = YanInverseDynamicsModel.from_pretrained(idm_dir).predict(batch["frames"][:, 0], batch["frames"][:, 1])
    acc = idm_accuracy(pred, (batch["actions"][:, 1] > 0.5).float())
    assert 0 <= acc["exact_match"] <= 1 and acc["num_pairs"] == 16


def test_yan_evaluate_end_to_end(model_dir, doom_data, idm_dir, tmp_path):
    out = tmp_path / "eval.json"
    rc = yan(
        ["evaluate", "--model", str(model_dir), "--data", str(doom_data), "--horizons", "1,2,4", "--json", str(out),
         "--episodes", "2", "--starts-per-episode", "1", "--seed", "3", "--idm", str(idm_dir)]
    )  # fmt: skip
    assert rc == 0
    d = json.loads(out.read_text())
    assert set(d) == {"results", "settings", "notes", "seconds"}
    for h in ("1", "2", "4"):
        e = d["results"]["horizons"][h]
        for metric in ("psnr", "ssim"):
            for side in ("model", "copy_last"):
                assert set(e[metric][side]) == {"mean", "std", "count"} and e[metric][side]["count"] > 0
        assert "beats_copy_last" in e and "psnr_gain_over_copy_last_db" in e
    assert d["results"]["horizons"]["1"]["num_predictions"] == 2 * 4  # 2 windows x 4 teacher-forced steps
    idm = d["results"]["idm"]
    assert {"real", "rollout", "teacher_forced", "rollout_over_real_per_button"} <= set(idm)
    s = d["settings"]
    for key in ("model", "data", "horizons", "seed", "num_inference_steps", "machine", "date", "versions", "windows"):
        assert key in s
    assert s["horizons"] == [1, 2, 4] and s["seed"] == 3 and s["windows"]["num_windows"] == 2
    assert s["guidance_scale"] == 1.0  # the folder's default
    assert any("LPIPS" in n for n in d["notes"]) and any("FVD" in n for n in d["notes"])
    # with action guidance: recorded in the settings, and the generated frames (so the figures) change
    guided = tmp_path / "guided.json"
    rc = yan(
        ["evaluate", "--model", str(model_dir), "--data", str(doom_data), "--horizons", "1,2,4", "--json",
         str(guided), "--episodes", "2", "--starts-per-episode", "1", "--seed", "3", "--guidance-scale", "3",
         "--guidance-steps", "2"]
    )  # fmt: skip
    assert rc == 0
    g = json.loads(guided.read_text())
    assert g["settings"]["guidance_scale"] == 3.0 and g["settings"]["guidance_steps"] == 2
    model_psnr = lambda r: r["results"]["horizons"]["4"]["psnr"]["model"]["mean"]  # noqa: E731
    copy_psnr = lambda r: r["results"]["horizons"]["4"]["psnr"]["copy_last"]["mean"]  # noqa: E731
    assert model_psnr(g) != model_psnr(d) and copy_psnr(g) == copy_psnr(d)


def test_bad_input(model_dir, doom_data, idm_dir, tmp_path, capsys):
    def err(*args):
        rc = yan(["evaluate", "--json", str(tmp_path / "x.json"), *map(str, args)])
        assert rc == 2
        return capsys.readouterr().err

    assert "--model" in err("--model", tmp_path / "nope", "--data", doom_data)
    assert "--data" in err("--model", model_dir, "--data", tmp_path / "nodata")
    assert "horizons up to 59" in err("--model", model_dir, "--data", doom_data, "--horizons", "1,200")
    assert "--horizons" in err("--model", model_dir, "--data", doom_data, "--horizons", "0,x")
    assert "--guidance-scale" in err("--model", model_dir, "--data", doom_data, "--guidance-scale", "0.5")
    assert "--guidance-steps" in err("--model", model_dir, "--data", doom_data, "--guidance-steps", "0")
    assert "--idm" in err("--model", model_dir, "--data", doom_data, "--idm", tmp_path)
    other = tmp_path / "other"
    tiny_pipe(action_space={"buttons": ["MOVE_FORWARD", "ATTACK"]}).save_pretrained(other)
    assert "action space" in err("--model", other, "--data", doom_data)
    assert not (tmp_path / "x.json").exists()
    # an IDM over other buttons than the model's is refused
    idm = YanInverseDynamicsModel(action_space={"buttons": ["ATTACK"]}, block_out_channels=(8,))
    with pytest.raises(ValueError, match="--idm"):
        evaluate_windows(OraclePipe(), [crafted_window(0, 1 + R)], horizons=(1,), idm=idm, show_progress=False)
    with pytest.raises(ValueError, match="shorter"):
        evaluate_windows(OraclePipe(), [crafted_window(0, R)], horizons=(1,), show_progress=False)


def test_bundle_script_ships_the_evaluated_guidance(model_dir, doom_data, idm_dir, tmp_path):
    """scripts/bundle_model.py: a Hub-ready folder whose defaults are the settings its card's figures came from."""
    report = tmp_path / "eval.json"
    rc = yan(
        ["evaluate", "--model", str(model_dir), "--data", str(doom_data), "--horizons", "1,2", "--json", str(report),
         "--episodes", "1", "--starts-per-episode", "1", "--guidance-scale", "2", "--guidance-steps", "2",
         "--idm", str(idm_dir)]
    )  # fmt: skip
    assert rc == 0
    spec = importlib.util.spec_from_file_location("bundle_model", ROOT / "scripts" / "bundle_model.py")
    bundle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle)
    out = tmp_path / "bundled"
    args = ["--pipeline", str(model_dir), "--heldout", str(doom_data), "--eval_json", str(report), "--out", str(out)]
    assert bundle.main([*args, "--guidance_scale", "2", "--guidance_steps", "2", "--num_start_frames", "2"]) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["default_guidance_scale"] == 2.0 and index["default_guidance_steps"] == 2
    assert sorted(p.name for p in (out / "start_frames").iterdir()) == ["000.png", "001.png"]
    card = (out / "README.md").read_text()
    assert "## Evaluation against the game engine" in card and "`default_guidance_scale=2`" in card
    assert "inverse-dynamics probe" in card and "| MOVE_FORWARD |" in card  # hit / false-alarm rates per button
    assert YanSimPipeline.from_pretrained(out).config.default_guidance_steps == 2
    # a folder that would ship other settings than the evaluated ones is refused
    with pytest.raises(SystemExit):
        bundle.main([*args, "--guidance_scale", "3", "--guidance_steps", "2"])
    with pytest.raises(SystemExit):
        bundle.main(args)  # the tiny model's own default: no guidance
