"""`yan generate` end to end on a tiny saved model folder (start frame shipped in the folder, as bundled models do)."""

import subprocess
import sys

import imageio.v3 as iio
import pytest

from diffusers_yan.cli import main

from .test_pipeline_yan_sim import make_pipe, start_image


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-yan-sim")
    make_pipe().save_pretrained(path)
    (path / "start_frames").mkdir()
    start_image(size=(48, 64)).save(path / "start_frames" / "000.png")
    return path


def test_generate_writes_a_video(model_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    rc = main(
        ["generate", "--model", str(model_dir), "--actions", "MOVE_FORWARD*3,TURN_LEFT+ATTACK", "--out", str(out)]
    )
    assert rc == 0
    frames = iio.imread(out)
    # the start frame + 2 frames per action
    assert frames.shape[0] == 1 + 4 * 2 and frames.shape[1:3] == (32, 32)


def test_generate_with_image_and_gif(model_dir, tmp_path):
    img = tmp_path / "start.png"
    start_image(seed=3, size=(100, 80)).save(img)
    out = tmp_path / "clip.gif"
    assert (
        main(["generate", "--model", str(model_dir), "--image", str(img), "--actions", "NOOP*2", "--out", str(out)])
        == 0
    )
    assert out.stat().st_size > 0


def test_generate_refuses_bad_input(model_dir, tmp_path, capsys):
    assert main(["generate", "--model", str(model_dir), "--actions", "FLY*2", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "unknown action 'FLY'" in capsys.readouterr().err
    assert (
        main(["generate", "--model", str(model_dir), "--image", "missing.png", "--out", str(tmp_path / "x.mp4")]) == 2
    )
    assert "not a file" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["generate", "--model", str(model_dir), "--image", str(bad), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "cannot read" in capsys.readouterr().err
    args = ["generate", "--model", str(model_dir), "--guidance-scale", "0", "--out", str(tmp_path / "x.mp4")]
    assert main(args) == 2
    assert "--guidance-scale must be >= 1" in capsys.readouterr().err


def test_generate_with_action_guidance(model_dir, tmp_path):
    out = tmp_path / "guided.mp4"
    args = ["generate", "--model", str(model_dir), "--actions", "MOVE_FORWARD*3", "--guidance-scale", "2"]
    assert main([*args, "--out", str(out)]) == 0
    assert iio.imread(out).shape[0] == 1 + 3 * 2


def test_yan_entry_point_lists_commands():
    res = subprocess.run(
        [sys.executable, "-m", "diffusers_yan.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "generate" in res.stdout
