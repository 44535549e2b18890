"""A small real ViZDoom collection end to end: dataset on disk, card, metadata, alignment, loader, resume, CLI."""

import argparse
import json
import os

import numpy as np
import pytest


pytest.importorskip("vizdoom")
datasets = pytest.importorskip("datasets")

from diffusers_yan.actions import DOOM_BUTTONS, ActionSpace  # noqa: E402
from diffusers_yan.data import CollectConfig, DoomEnvConfig, GameplayClipDataset, collect  # noqa: E402
from diffusers_yan.data.collector import SHARDS_DIR, collect_episode  # noqa: E402


def _config(out, episodes=2, workers=1, **kwargs):
    # my_way_home at 64x48: ~150 frames per episode, a few hundred frames in all
    env = DoomEnvConfig(scenario="my_way_home", resolution=(64, 48), max_steps=150)
    return CollectConfig(env=env, episodes=episodes, agent="random", seed=3, out=str(out), workers=workers, **kwargs)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("doom") / "mwh"
    info = collect(_config(out))
    return out, info


def test_dataset_on_disk(collected):
    out, info = collected
    ds = datasets.load_from_disk(str(out))
    assert 200 <= len(ds) <= 300
    for col in ("episode_id", "segment_id", "frame_index", "frame", "action", "depth", "labels", "state"):
        assert col in ds.column_names
    assert "global_caption" in ds.column_names and "local_caption" in ds.column_names
    assert isinstance(ds.features["frame"], datasets.Image) and isinstance(ds.features["depth"], datasets.Image)
    row = ds[0]
    assert row["frame"].size == (64, 48) and row["depth"].mode == "L"
    assert set(row["state"]) >= {"x", "y", "z", "angle", "health", "alive"}
    assert row["global_caption"].startswith("Doom, the my_way_home scenario")
    assert row["local_caption"].startswith("The player")

    meta = json.load(open(out / "yan_dataset.json"))
    assert ActionSpace.from_dict(meta["action_space"]).buttons == DOOM_BUTTONS
    assert meta["buttons"] == list(DOOM_BUTTONS) and meta["resolution"] == [64, 48]
    assert meta["scenario"] == "my_way_home" and meta["map"] is None and meta["frame_skip"] == 4
    assert meta["agent"] == "random" and meta["seed"] == 3 and meta["num_episodes"] == 2
    assert meta["num_frames"] == len(ds)
    assert set(meta["filter_counts"]) == {"death", "transition", "wall", "lag"}
    assert meta["num_played_frames"] == len(ds) + sum(meta["filter_counts"].values())
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "license:" in card and "tags:" in card
    assert not (out / SHARDS_DIR).exists()


def test_action_alignment(collected):
    """Row i's action led to frame i: the first frame has no action, a left turn shows up in that same row."""
    ds = datasets.load_from_disk(str(collected[0]))
    ep, fi = np.asarray(ds["episode_id"]), np.asarray(ds["frame_index"])
    actions = np.asarray(ds["action"])
    angle = np.array([s["angle"] for s in ds["state"]])
    for e in np.unique(ep):
        first = np.flatnonzero(ep == e)[0]
        if fi[first] == 0:
            assert not actions[first].any()
    left, right = DOOM_BUTTONS.index("TURN_LEFT"), DOOM_BUTTONS.index("TURN_RIGHT")
    turned_left = []
    for i in range(1, len(ds)):
        if ep[i] == ep[i - 1] and fi[i] == fi[i - 1] + 1 and actions[i, left] and not actions[i, right]:
            turned_left.append((angle[i] - angle[i - 1]) % 360)
    assert len(turned_left) > 5
    assert np.mean([0 < d < 180 for d in turned_left]) > 0.9  # Doom angles grow counter-clockwise


def test_clips(collected):
    out, _ = collected
    clips = GameplayClipDataset(str(out), clip_length=8, with_depth=True)
    assert len(clips) > 10 and clips.action_space.dim == 8
    item = clips[0]
    assert item["frames"].shape == (8, 3, 48, 64) and item["frames"].dtype.is_floating_point
    assert -1.0 <= item["frames"].min() and item["frames"].max() <= 1.0
    assert item["actions"].shape == (8, 8) and item["depth"].shape == (8, 1, 48, 64)
    assert 0.0 <= item["depth"].min() and item["depth"].max() <= 1.0
    assert isinstance(item["global_caption"], str) and isinstance(item["local_caption"], str)
    # clips never cross an episode or segment boundary
    ds = clips.dataset
    ep, seg, fi = (np.asarray(ds[c]) for c in ("episode_id", "segment_id", "frame_index"))
    for s in clips.starts:
        sl = slice(s, s + 8)
        assert len(set(ep[sl])) == 1 and len(set(seg[sl])) == 1 and np.all(np.diff(fi[sl]) == 1)
    # resizing and streaming
    small = GameplayClipDataset(str(out), clip_length=4, stride=2, resolution="32x24")
    assert small[0]["frames"].shape == (4, 3, 24, 32) and "depth" not in small[0]
    stream = GameplayClipDataset(str(out), clip_length=8, streaming=True)
    streamed = list(stream)
    assert [c["start_index"] for c in streamed] == [clips[i]["start_index"] for i in range(len(clips))]
    assert np.allclose(streamed[3]["frames"].numpy(), clips[3]["frames"].numpy())


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset folder"):
        GameplayClipDataset(str(tmp_path / "missing"), clip_length=4)
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="yan_dataset.json"):
        GameplayClipDataset(str(tmp_path / "half"), clip_length=4)
    with pytest.raises(ValueError, match="clip_length"):
        GameplayClipDataset(str(tmp_path / "half"), clip_length=0)


def _same(a, b):
    assert len(a) == len(b)
    for col in ("episode_id", "segment_id", "frame_index", "action", "state", "local_caption"):
        assert a[col] == b[col], col
    ta, tb = a.with_format("arrow")["frame"], b.with_format("arrow")["frame"]
    assert ta.equals(tb)


def test_same_seed_same_data_with_parallel_workers(collected, tmp_path):
    out, _ = collected
    collect(_config(tmp_path / "again", workers=2))
    _same(datasets.load_from_disk(str(out)), datasets.load_from_disk(str(tmp_path / "again")))


def test_resume_after_kill(collected, tmp_path):
    out = tmp_path / "resumed"
    config = _config(out, keep_shards=True)
    # a run that finished episode 1, then was killed while writing episode 0
    collect_episode(config, 1)
    shard = out / SHARDS_DIR / "episode_00001"
    mtime = os.path.getmtime(shard / "stats.json")
    junk = out / SHARDS_DIR / "episode_00000.tmp-12345"
    junk.mkdir()
    (junk / "data-00000-of-00001.arrow").write_bytes(b"half written")
    collect(config)
    assert os.path.getmtime(shard / "stats.json") == mtime  # finished shard not redone
    assert not junk.exists()
    _same(datasets.load_from_disk(str(collected[0])), datasets.load_from_disk(str(out)))
    # a different setting in the same folder is refused
    with pytest.raises(ValueError, match="different settings"):
        collect(CollectConfig(env=config.env, episodes=2, agent="explore", seed=3, out=str(out)))


def _parser():
    from diffusers_yan.data.cli import register

    parser = argparse.ArgumentParser(prog="yan")
    register(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize(
    "argv, listed",
    [
        (["--scenario", "no_such_map"], "my_way_home"),
        (["--scenario", "freedoom2", "--map", "MAP99"], "MAP32"),
        (["--scenario", "my_way_home", "--map", "MAP01"], "freedoom2"),
        (["--scenario", "basic", "--agent", "genius"], "random, explore, ppo"),
        (["--scenario", "basic", "--resolution", "big"], "WIDTHxHEIGHT"),
        (["--scenario", "basic", "--agent", "ppo", "--ppo-model", "nowhere.zip"], "train_ppo_agent.py"),
        (["--scenario", "basic", "--buttons", "JUMP_AROUND"], "JUMP_AROUND"),
    ],
)
def test_cli_refuses_bad_arguments(argv, listed, tmp_path, capsys):
    args = _parser().parse_args(["collect", *argv, "--out", str(tmp_path / "x")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert listed in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_cli_collect_and_balance(tmp_path):
    from diffusers_yan.cli import main

    out, bal = tmp_path / "basic", tmp_path / "basic_bal"
    argv = ["collect", "--scenario", "basic", "--episodes", "2", "--agent", "explore", "--seed", "1"]
    assert main(argv + ["--resolution", "64x48", "--max-steps", "60", "--out", str(out)]) == 0
    assert len(datasets.load_from_disk(str(out))) > 0
    assert main(["balance", "--in", str(out), "--out", str(bal), "--clusters", "4", "--window", "4"]) == 0
    meta = json.load(open(bal / "yan_dataset.json"))
    assert meta["balance"]["coverage_after"]["entropy_bits"] >= 0 and meta["num_frames"] > 0
    assert len(GameplayClipDataset(str(bal), clip_length=4)) > 0


def test_resume_after_real_kill(tmp_path):
    """SIGKILL a running `yan collect`, run it again: finished shards are kept, the dataset completes."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "diffusers_yan.cli", "collect", "--scenario", "my_way_home", "--episodes", "30"]
    cmd += ["--max-steps", "60", "--resolution", "64x48", "--seed", "5", "--keep-shards", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = out / SHARDS_DIR
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if shards.exists() and len([p for p in shards.glob("episode_*") if ".tmp-" not in p.name]) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: os.path.getmtime(p / "stats.json") for p in shards.glob("episode_*") if ".tmp-" not in p.name}
    assert 2 <= len(finished) < 30, "the run should have been killed part-way"
    assert not (out / "yan_dataset.json").exists()

    assert subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    assert {
        p.name: os.path.getmtime(p / "stats.json") for p in shards.glob("episode_*") if p.name in finished
    } == finished
    assert not list(shards.glob("*.tmp-*"))
    ds = datasets.load_from_disk(str(out))
    assert json.load(open(out / "yan_dataset.json"))["num_episodes"] == 30
    assert set(ds["episode_id"]) <= set(range(30)) and len(set(ds["episode_id"])) >= 25
