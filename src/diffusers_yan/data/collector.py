"""Collect gameplay into a Hugging Face dataset: play -> filter -> caption -> shards -> (balance) -> dataset.

Layout of the output folder ``out``::

    out/
      data-*.arrow, dataset_info.json, state.json   the dataset (``datasets.load_from_disk(out)``)
      README.md                                     dataset card (Hub front matter)
      yan_dataset.json                              action space, buttons, scenario, counts (written last)
      shards/episode_00000/ ...                     one finished episode per folder, until finalised

Each episode is played, filtered and captioned in a worker process and written as its own shard, first to a
temporary folder which is then renamed, so a killed run never leaves a half-written shard; a new run with the same
arguments skips the finished shards and plays only the missing episodes. Episode ``i`` is seeded from
``(seed, i)`` only, so the dataset does not depend on the number of workers or on where a run was interrupted.

Rows are frames. Row ``i``'s ``action`` is the action executed between frame ``i - 1`` and frame ``i`` (the
action that led to it); the first frame of an episode has the all-zero action. Dropped frames split an episode
into segments (``segment_id``); a training clip must stay inside one ``(episode_id, segment_id)``.

Example:

```py
>>> from diffusers_yan.data.collector import CollectConfig, collect
>>> from diffusers_yan.data.env import DoomEnvConfig
>>> env = DoomEnvConfig(scenario="my_way_home", resolution=(64, 48), max_steps=100)
>>> info = collect(CollectConfig(env=env, episodes=2, agent="random", seed=0, out="/tmp/doom_small"))
>>> import datasets; datasets.load_from_disk("/tmp/doom_small")[0]["action"]
[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
```
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np

from ..actions import ActionSpace
from .agents import AGENTS, CELL_SIZE, cell_of, make_agent
from .captions import VLMCaptioner, global_caption, local_caption
from .env import DoomEnvConfig
from .filters import FilterConfig, count_reasons, filter_episode


logger = logging.getLogger(__name__)

DATASET_INFO_NAME = "yan_dataset.json"
SHARDS_DIR = "shards"
CAPTIONERS = ("engine", "vlm")
# Frames are PNG (lossless: JPEG ringing would be learned by a world model). Level 3 is ~2x faster to encode than
# PNG's default 6 on Doom frames for a few percent more bytes.
PNG_COMPRESS_LEVEL = 3


@dataclass
class CollectConfig:
    """Arguments of :func:`collect` (and of ``yan collect``).

    Args:
        env: what to play (scenario, map, resolution, frame skip, buttons, HUD, max steps).
        episodes: number of episodes.
        agent: one of ``random``, ``explore``, ``ppo``.
        seed: base seed; episode ``i`` uses seeds derived from ``(seed, i)``.
        out: output folder.
        workers: worker processes (1 = play in this process).
        ppo_model: the PPO policy zip for ``agent="ppo"``.
        filters: filter thresholds and which filters run.
        caption_window: frames per local caption (a training clip's caption joins the windows it covers).
        captioner: ``engine`` (default) or ``vlm``.
        vlm_model: model folder or Hub id for ``captioner="vlm"``, or a ready :class:`~.captions.VLMCaptioner`
            (only with ``workers=1``: a model is not shipped to worker processes).
        balance: balance the dataset (PlayGen Algorithm 2) before saving; see :func:`~.balance.balance_dataset`.
        balance_clusters / balance_window: k-means ``k`` and the sampled unit length in frames.
        keep_shards: keep ``out/shards`` after the dataset is written (to extend it later with more episodes).
    """

    env: DoomEnvConfig = field(default_factory=DoomEnvConfig)
    episodes: int = 10
    agent: str = "random"
    seed: int = 0
    out: str = "doom_dataset"
    workers: int = 1
    ppo_model: str | None = None
    filters: FilterConfig = field(default_factory=FilterConfig)
    caption_window: int = 16
    captioner: str = "engine"
    vlm_model: str | VLMCaptioner | None = None
    balance: bool = False
    balance_clusters: int = 32
    balance_window: int = 16
    keep_shards: bool = False

    def __post_init__(self):
        if self.agent not in AGENTS:
            raise ValueError(f"Unknown agent {self.agent!r}. Valid agents: {', '.join(AGENTS)}.")
        if self.agent == "ppo" and not self.ppo_model:
            raise ValueError(
                "`agent='ppo'` needs `ppo_model` (the .zip saved by training_examples/train_ppo_agent.py)."
            )
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"Unknown captioner {self.captioner!r}. Valid captioners: {', '.join(CAPTIONERS)}.")
        if self.captioner == "vlm" and not self.vlm_model:
            raise ValueError("`captioner='vlm'` needs `vlm_model` (a local folder or Hub id of a Qwen2.5-VL model).")
        if isinstance(self.vlm_model, VLMCaptioner) and self.workers != 1:
            raise ValueError(
                "`vlm_model` as a VLMCaptioner object needs `workers=1`; pass a model path for more workers."
            )
        for name in ("episodes", "workers", "caption_window", "balance_clusters", "balance_window"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")

    def identity(self) -> dict:
        """What determines the data (a resumed run must match it; workers and episodes may change)."""
        return {
            "env": self.env.to_dict(),
            "agent": self.agent,
            "seed": self.seed,
            "ppo_model": os.path.basename(self.ppo_model) if self.ppo_model else None,
            "filters": self.filters.to_dict(),
            "caption_window": self.caption_window,
            "captioner": self.captioner,
            "vlm_model": type(self.vlm_model).__name__ if isinstance(self.vlm_model, VLMCaptioner) else self.vlm_model,
        }


def episode_seeds(seed: int, episode: int) -> tuple[int, int]:
    """(engine seed, agent seed) of episode ``episode``: independent streams from ``(seed, episode)``."""
    env_seed, agent_seed = np.random.SeedSequence([int(seed), int(episode)]).generate_state(2)
    return int(env_seed) % (2**31 - 1), int(agent_seed)


def dataset_features(num_buttons: int):
    """The ``datasets.Features`` of a collected dataset."""
    from datasets import Features, Image, List, Value

    label = {k: Value("int32") for k in ("value", "x", "y", "w", "h")}
    label["name"] = Value("string")
    label["position"] = Value("string")  # rough screen position of the box centre: left / center / right
    state = {k: Value("float32") for k in ("x", "y", "z", "angle", "health", "armor")}
    state.update({"alive": Value("bool"), "kills": Value("int32"), "items": Value("int32"), "ammo": Value("int32")})
    return Features(
        {
            "episode_id": Value("int32"),
            "segment_id": Value("int32"),
            "frame_index": Value("int32"),
            "frame": Image(),
            "depth": Image(),
            "action": List(Value("float32"), length=num_buttons),
            "labels": List(label),
            "state": state,
            "events": List(Value("string")),
            "reward": Value("float32"),
            "global_caption": Value("string"),
            "local_caption": Value("string"),
        }
    )


def _png(array: np.ndarray) -> dict:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return {"bytes": buf.getvalue(), "path": None}


# one env / agent / captioner per worker process, reused across its episodes (engine start-up is ~0.1 s)
_WORKER: dict = {}


def _worker_objects(config: CollectConfig):
    key = json.dumps(config.identity(), sort_keys=True) + f"/{id(config.vlm_model)}"
    if _WORKER.get("key") != key:
        from .env import DoomEnv

        if "env" in _WORKER:
            _WORKER["env"].close()
        _WORKER.clear()
        _WORKER["key"] = key
        _WORKER["env"] = DoomEnv(config.env)
        _WORKER["agent"] = make_agent(config.agent, config.env.buttons, ppo_model=config.ppo_model)
        vlm = config.vlm_model if config.captioner == "vlm" else None
        _WORKER["vlm"] = VLMCaptioner.from_pretrained(vlm) if isinstance(vlm, str) else vlm
    return _WORKER["env"], _WORKER["agent"], _WORKER["vlm"]


def play_episode(env, agent, env_seed: int, agent_seed: int) -> tuple[list, list[float]]:
    """Play one episode; returns its frames (:class:`~.env.DoomFrame`) and per-frame rewards."""
    agent.reset(agent_seed)
    frame = env.reset(env_seed)
    frames, rewards = [frame], [0.0]
    while True:
        frame = env.step(agent.act(frame))
        if frame is None:
            break
        frames.append(frame)
        rewards.append(env.last_reward)
    return frames, rewards


def _caption_rows(config, frames, segments, layout, vlm) -> tuple[str, list[str]]:
    """Global caption of the episode and the local caption of every frame (its window's caption)."""
    buttons = config.env.buttons
    kept = [f for f, s in zip(frames, segments) if s >= 0]
    sample = kept[:: max(1, len(kept) // 8)] if kept else frames[:1]
    if vlm is not None:
        global_text = vlm.caption([sample[len(sample) // 2].rgb], vlm.GLOBAL_PROMPT)
    else:
        global_text = global_caption(config.env.scenario, config.env.map, layout, [f.rgb for f in sample])
    local = [""] * len(frames)
    idx = np.flatnonzero(segments >= 0)
    w, h = config.env.resolution
    # windows of `caption_window` frames inside each segment
    runs: list[list[int]] = []
    for i in idx:
        if runs and segments[runs[-1][-1]] == segments[i] and len(runs[-1]) < config.caption_window:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        if vlm is not None:
            picks = [frames[run[0]].rgb, frames[run[len(run) // 2]].rgb, frames[run[-1]].rgb]
            text = vlm.caption(picks, vlm.LOCAL_PROMPT)
        else:
            text = local_caption(
                [
                    {
                        "labels": frames[i].labels,
                        "events": frames[i].events,
                        "action": dict(zip(buttons, frames[i].action)),
                    }
                    for i in run
                ],
                width=w,
                height=h,
            )
        for i in run:
            local[i] = text
    return global_text, local


def collect_episode(config: CollectConfig, episode: int) -> dict:
    """Play, filter and caption episode ``episode`` and write its shard atomically. Returns its stats."""
    from datasets import Dataset
    from datasets.utils import logging as datasets_logging

    shard_dir = os.path.join(config.out, SHARDS_DIR, f"episode_{episode:05d}")
    if os.path.exists(os.path.join(shard_dir, "stats.json")):
        with open(os.path.join(shard_dir, "stats.json")) as f:
            return json.load(f)
    env, agent, vlm = _worker_objects(config)
    env_seed, agent_seed = episode_seeds(config.seed, episode)
    t0 = time.perf_counter()
    frames, rewards = play_episode(env, agent, env_seed, agent_seed)
    play_s = time.perf_counter() - t0
    segments, reasons = filter_episode(frames, config.env.buttons, config.filters)
    global_text, local = _caption_rows(config, frames, segments, env.layout, vlm)

    rows = {name: [] for name in dataset_features(len(config.env.buttons))}
    for i, f in enumerate(frames):
        if segments[i] < 0:
            continue
        rows["episode_id"].append(episode)
        rows["segment_id"].append(int(segments[i]))
        rows["frame_index"].append(i)
        rows["frame"].append(_png(f.rgb))
        rows["depth"].append(_png(f.depth))
        rows["action"].append(f.action.tolist())
        rows["labels"].append(f.labels)
        rows["state"].append(f.state)
        rows["events"].append(f.events)
        rows["reward"].append(rewards[i])
        rows["global_caption"].append(global_text)
        rows["local_caption"].append(local[i])
    stats = {
        "episode": episode,
        "env_seed": env_seed,
        "agent_seed": agent_seed,
        "frames": len(frames),
        "kept": int((segments >= 0).sum()),
        "segments": int(segments.max() + 1) if len(segments) else 0,
        "filter_counts": count_reasons(reasons),
        "return": float(sum(rewards)),
        "coverage_cells": len({cell_of(f.state, CELL_SIZE) for f in frames}),
        "play_seconds": play_s,
        "total_seconds": time.perf_counter() - t0,
        "layout": env.layout,
    }
    tmp = shard_dir + f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    bars = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()  # one bar per shard would drown the collection bar
    try:
        Dataset.from_dict(rows, features=dataset_features(len(config.env.buttons))).save_to_disk(tmp)
    finally:
        if bars:
            datasets_logging.enable_progress_bar()
    with open(os.path.join(tmp, "stats.json"), "w") as f:
        json.dump(stats, f)
    shutil.rmtree(shard_dir, ignore_errors=True)  # a stale shard without stats.json (cannot happen after rename)
    os.replace(tmp, shard_dir)  # atomic: the shard appears complete or not at all
    return stats


def _collect_episode_star(args):
    return collect_episode(*args)


def _check_resume(config: CollectConfig):
    """Refuse to mix shards of different settings in one folder."""
    shards = os.path.join(config.out, SHARDS_DIR)
    os.makedirs(shards, exist_ok=True)
    path = os.path.join(shards, "collect_config.json")
    identity = config.identity()
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous != identity:
            diff = sorted(k for k in identity if previous.get(k) != identity[k])
            raise ValueError(
                f"`out`: {config.out!r} holds shards collected with different settings ({', '.join(diff)});"
                " use a new --out folder or the same settings to resume."
            )
    else:
        with open(path + ".tmp", "w") as f:
            json.dump(identity, f, indent=2)
        os.replace(path + ".tmp", path)
    for name in os.listdir(shards):  # leftovers of killed writers
        if ".tmp-" in name:
            shutil.rmtree(os.path.join(shards, name), ignore_errors=True)


def collect(config: CollectConfig) -> dict:
    """Collect ``config.episodes`` episodes into ``config.out`` (resuming a killed run). Returns the dataset info."""
    from tqdm.auto import tqdm

    info_path = os.path.join(config.out, DATASET_INFO_NAME)
    if os.path.exists(info_path) and not os.path.isdir(os.path.join(config.out, SHARDS_DIR)):
        with open(info_path) as f:
            info = json.load(f)
        if info.get("collect_config") == config.identity() and info.get("num_episodes") == config.episodes:
            logger.info("%s is already complete; nothing to do.", config.out)
            return info
        raise ValueError(
            f"`out`: {config.out!r} already holds a finished dataset with other settings; use a new --out folder."
        )
    _check_resume(config)
    todo = [(config, e) for e in range(config.episodes)]
    t0 = time.perf_counter()
    stats: list[dict] = []
    bar = tqdm(total=config.episodes, desc=f"collect {config.env.scenario}", unit="ep")
    played_frames = 0
    if config.workers == 1:
        results = map(_collect_episode_star, todo)
        pool = None
    else:
        import multiprocessing as mp

        # spawn, not fork: the parent may hold torch/OpenMP threads that a forked child would inherit broken
        pool = mp.get_context("spawn").Pool(config.workers)
        results = pool.imap_unordered(_collect_episode_star, todo)
    try:
        for s in results:
            stats.append(s)
            played_frames += s["frames"]
            bar.update(1)
            bar.set_postfix(frames=played_frames, fps=f"{played_frames / (time.perf_counter() - t0):.0f}")
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    elapsed = time.perf_counter() - t0
    stats.sort(key=lambda s: s["episode"])
    return finalize(config, stats, elapsed)


def _dataset_card(info: dict) -> str:
    w, h = info["resolution"]
    where = f"map {info['map']} of {info['scenario']}" if info["map"] else f"the `{info['scenario']}` scenario"
    counts = "\n".join(f"| {k} | {v} |" for k, v in info["filter_counts"].items())
    size = "n<1K" if info["num_frames"] < 1000 else "1K<n<10K" if info["num_frames"] < 10000 else "10K<n<100K"
    if info["num_frames"] >= 100000:
        size = "100K<n<1M" if info["num_frames"] < 1_000_000 else "n>1M"
    return f"""---
license: bsd-3-clause
pretty_name: Doom gameplay ({info["scenario"]}{", " + info["map"] if info["map"] else ""}, {info["agent"]} agent)
tags:
- doom
- vizdoom
- world-model
- video
- diffusers-yan
task_categories:
- image-to-video
size_categories:
- {size}
---

# Doom gameplay: {info["scenario"]}{" " + info["map"] if info["map"] else ""}

Gameplay of {where} (Freedoom assets, BSD-3-Clause) recorded with ViZDoom by `yan collect` from
[diffusers-yan](https://github.com/), for training action-conditioned world models (Yan-Sim / Yan-Gen).

- agent: `{info["agent"]}`, seed {info["seed"]}, {info["num_episodes"]} episodes, {info["num_frames"]} frames
  ({info["num_segments"]} contiguous segments)
- resolution {w}x{h}, frame skip {info["frame_skip"]} (one frame every {info["frame_skip"]} engine tics at 35 Hz), HUD {"on" if info["hud"] else "off"}
- action space: multi-hot over {", ".join(f"`{b}`" for b in info["buttons"])}

## Columns

One row per frame: `episode_id`, `segment_id` (a new segment starts after every dropped frame: clips must stay inside
one segment), `frame_index` (position in the played episode), `frame` (PNG), `depth` (8-bit PNG, engine depth units),
`action` (the action that led to this frame; zeros for an episode's first frame), `labels` (visible objects:
name and screen box), `state` (x, y, z, angle, health, armor, alive, kills, items, ammo), `events`, `reward`,
`global_caption` (episode), `local_caption` (a window of {info["caption_window"]} frames).

## Filters (dropped frames)

| reason | frames |
| --- | --- |
{counts}

## Loading

```py
from diffusers_yan.data import GameplayClipDataset
clips = GameplayClipDataset("path/to/this/folder", clip_length=16)
```
"""


def finalize(config: CollectConfig, stats: list[dict], elapsed: float | None = None) -> dict:
    """Join the shards into the dataset in ``config.out``, optionally balance, write card and ``yan_dataset.json``."""
    from datasets import concatenate_datasets, load_from_disk

    from .balance import balance_dataset, coverage_entropy

    shards_root = os.path.join(config.out, SHARDS_DIR)
    parts = [load_from_disk(os.path.join(shards_root, f"episode_{s['episode']:05d}")) for s in stats]
    parts = [p for p in parts if len(p) > 0]
    if not parts:
        raise RuntimeError(f"Every frame of {config.out!r} was filtered out; check the filters or the scenario.")
    dataset = concatenate_datasets(parts)
    balance_report = None
    if config.balance:
        dataset, balance_report = balance_dataset(
            dataset, k=config.balance_clusters, window=config.balance_window, seed=config.seed
        )
    else:
        xy = np.array([[s["x"], s["y"]] for s in dataset["state"]])
        logger.info("position coverage: %s", coverage_entropy(xy))

    # write to a temporary folder, then move the files in: the finished dataset never mixes two runs
    tmp = os.path.join(config.out, ".dataset.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(tmp)
    for name in os.listdir(config.out):
        if name.startswith("data-") and name.endswith(".arrow"):
            os.remove(os.path.join(config.out, name))
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(config.out, name))
    os.rmdir(tmp)

    played = sum(s["frames"] for s in stats)
    filter_counts = {k: sum(s["filter_counts"][k] for s in stats) for k in stats[0]["filter_counts"]}
    episode_ids = np.asarray(dataset["episode_id"])
    segment_ids = np.asarray(dataset["segment_id"])
    num_segments = int(len({(int(e), int(s)) for e, s in zip(episode_ids, segment_ids)}))
    info = {
        "format_version": 1,
        "action_space": ActionSpace(buttons=tuple(config.env.buttons)).to_dict(),
        "buttons": list(config.env.buttons),
        "scenario": config.env.scenario,
        "map": config.env.map,
        "resolution": list(config.env.resolution),
        "frame_skip": config.env.frame_skip,
        "hud": config.env.hud,
        "agent": config.agent,
        "seed": config.seed,
        "num_episodes": config.episodes,
        "num_frames": len(dataset),
        "num_played_frames": played,
        "num_segments": num_segments,
        "filter_counts": filter_counts,
        "caption_window": config.caption_window,
        "captioner": config.captioner,
        "action_alignment": "row i's action led from frame i-1 to frame i; an episode's first frame has zeros",
        "episode_returns": [s["return"] for s in stats],
        "episode_coverage_cells": [s["coverage_cells"] for s in stats],
        "coverage_cell_size": CELL_SIZE,
        "balance": balance_report,
        "collect_seconds": elapsed,
        "engine_seconds": sum(s["play_seconds"] for s in stats),  # playing only (no filters/captions/PNG)
        "frames_per_second": played / elapsed if elapsed else None,
        "collect_config": config.identity(),
    }
    with open(os.path.join(config.out, "README.md"), "w") as f:
        f.write(_dataset_card(info))
    with open(os.path.join(config.out, DATASET_INFO_NAME) + ".tmp", "w") as f:
        json.dump(info, f, indent=2)
    os.replace(os.path.join(config.out, DATASET_INFO_NAME) + ".tmp", os.path.join(config.out, DATASET_INFO_NAME))
    if not config.keep_shards:
        shutil.rmtree(shards_root, ignore_errors=True)
    logger.info(
        "collected %d frames (%d kept) from %d episodes in %s", played, len(dataset), config.episodes, config.out
    )
    return info
