"""Fixed-length training clips from a collected gameplay dataset, as torch tensors.

Example:

```py
>>> from diffusers_yan.data import GameplayClipDataset
>>> clips = GameplayClipDataset("doom_small", clip_length=8, with_depth=True)  # a folder made by `yan collect`
>>> item = clips[0]
>>> item["frames"].shape, item["actions"].shape, item["depth"].shape  # [F, 3, H, W], [F, 8], [F, 1, H, W]
(torch.Size([8, 3, 48, 64]), torch.Size([8, 8]), torch.Size([8, 1, 48, 64]))
>>> clips.action_space.buttons[:2]
('MOVE_FORWARD', 'MOVE_BACKWARD')
```
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from PIL import Image

from ..actions import ActionSpace


DATASET_INFO_NAME = "yan_dataset.json"
_REQUIRED_COLUMNS = ("episode_id", "segment_id", "frame", "action", "global_caption", "local_caption")


def _parse_resolution(resolution):
    if resolution is None:
        return None
    from .env import parse_resolution

    return parse_resolution(resolution)


def read_dataset_info(path: str) -> dict:
    """Read and check ``yan_dataset.json`` of a collected dataset folder."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"`path`: no dataset folder at {path!r} (make one with `yan collect --out {path}`).")
    info_path = os.path.join(path, DATASET_INFO_NAME)
    if not os.path.exists(info_path):
        raise FileNotFoundError(
            f"`path`: {path!r} has no {DATASET_INFO_NAME}; it is not a finished `yan collect` dataset (an interrupted"
            " run finishes when `yan collect` is run again with the same arguments)."
        )
    try:
        with open(info_path) as f:
            info = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"`path`: {info_path} is not valid JSON ({e}).") from None
    missing = [k for k in ("action_space", "buttons", "resolution") if k not in info]
    if missing:
        raise ValueError(f"`path`: {info_path} lacks the keys {missing}.")
    return info


def _group_runs(episode_ids: np.ndarray, segment_ids: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, end))`` row ranges of consecutive rows with the same (episode, segment)."""
    runs, start = [], 0
    for i in range(1, len(episode_ids) + 1):
        if i == len(episode_ids) or episode_ids[i] != episode_ids[start] or segment_ids[i] != segment_ids[start]:
            runs.append((start, i))
            start = i
    return runs


def _clip_starts(runs, clip_length: int, stride: int) -> list[int]:
    return [s for a, b in runs for s in range(a, b - clip_length + 1, stride)]


def _join_captions(captions) -> str:
    """Local captions of the windows a clip covers, in order, without repeats."""
    out = []
    for c in captions:
        if c and (not out or out[-1] != c):
            out.append(c)
    return " ".join(out)


class _ClipMixin:
    def _setup(self, path, clip_length, stride, resolution, with_depth):
        if int(clip_length) < 1:
            raise ValueError(f"`clip_length` must be >= 1, got {clip_length}.")
        if stride is not None and int(stride) < 1:
            raise ValueError(f"`stride` must be >= 1, got {stride}.")
        self.path = path
        self.info = read_dataset_info(path)
        self.action_space = ActionSpace.from_dict(self.info["action_space"])
        self.clip_length = int(clip_length)
        self.stride = int(stride) if stride is not None else self.clip_length
        self.resolution = _parse_resolution(resolution)
        self.with_depth = with_depth

    def _to_clip(self, rows: dict) -> dict:
        frames, depths = [], []
        for img, dep in zip(rows["frame"], rows["depth"] if self.with_depth else rows["frame"]):
            img = img.convert("RGB")
            if self.resolution is not None and img.size != self.resolution:
                img = img.resize(self.resolution, Image.BICUBIC)
            frames.append(np.asarray(img))
            if self.with_depth:
                dep = dep.convert("L")
                if self.resolution is not None and dep.size != self.resolution:
                    dep = dep.resize(self.resolution, Image.NEAREST)
                depths.append(np.asarray(dep))
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        item = {
            "frames": x,
            "actions": torch.tensor(np.asarray(rows["action"], dtype=np.float32)),
            "global_caption": rows["global_caption"][0],
            "local_caption": _join_captions(rows["local_caption"]),
            "episode_id": int(rows["episode_id"][0]),
            "start_index": int(rows["frame_index"][0]) if "frame_index" in rows else 0,
        }
        if self.with_depth:
            # 8-bit engine depth units -> [0, 1]
            item["depth"] = torch.from_numpy(np.stack(depths)).float().div(255.0)[:, None]
        return item


def _load(path: str):
    from datasets import load_from_disk

    try:
        ds = load_from_disk(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"`path`: {path!r} holds no `datasets` data (state.json / arrow files): {e}") from None
    missing = [c for c in _REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"`path`: the dataset in {path!r} lacks the columns {missing}; it has {ds.column_names}.")
    return ds


class GameplayClipDataset(_ClipMixin, torch.utils.data.Dataset):
    """Clips of ``clip_length`` consecutive frames that never cross an episode or segment boundary.

    Args:
        path: a folder written by ``yan collect`` / :func:`~diffusers_yan.data.collector.collect`.
        clip_length: frames per clip ``F``.
        stride: frames between clip starts (default ``clip_length``: non-overlapping clips).
        resolution: ``(width, height)`` or ``"WxH"`` to resize to; ``None`` keeps the stored resolution.
        streaming: return an ``IterableDataset`` that reads rows in order (constant memory, any dataset size).
        with_depth: also return ``depth``.

    Items: ``frames`` float32 ``[F, 3, H, W]`` in [-1, 1]; ``actions`` float32 ``[F, action_dim]`` (``actions[t]`` led
    to ``frames[t]``); ``depth`` float32 ``[F, 1, H, W]`` in [0, 1]; ``global_caption``, ``local_caption``,
    ``episode_id``, ``start_index`` (index of the first frame in its played episode).
    """

    def __new__(cls, path, clip_length, stride=None, resolution=None, streaming=False, with_depth=False):
        if streaming:
            return GameplayClipIterableDataset(path, clip_length, stride, resolution, with_depth)
        return super().__new__(cls)

    def __init__(self, path, clip_length, stride=None, resolution=None, streaming=False, with_depth=False):
        self._setup(path, clip_length, stride, resolution, with_depth)
        self.dataset = _load(path)
        runs = _group_runs(np.asarray(self.dataset["episode_id"]), np.asarray(self.dataset["segment_id"]))
        self.starts = _clip_starts(runs, self.clip_length, self.stride)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        s = self.starts[index]
        return self._to_clip(self.dataset[s : s + self.clip_length])


class GameplayClipIterableDataset(_ClipMixin, torch.utils.data.IterableDataset):
    """Streaming version of :class:`GameplayClipDataset` (made by it with ``streaming=True``).

    Rows are read in order and buffered only within the current segment. With a ``DataLoader`` of several
    workers, worker ``w`` takes the segments whose number is ``w`` modulo the number of workers.
    """

    def __init__(self, path, clip_length, stride=None, resolution=None, with_depth=False):
        self._setup(path, clip_length, stride, resolution, with_depth)
        self.dataset = _load(path)

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        stream = self.dataset.to_iterable_dataset()
        buffer: dict = {}
        key, run_index = None, -1
        for row in stream:
            k = (row["episode_id"], row["segment_id"])
            if k != key:
                key, run_index, buffer = k, run_index + 1, {}
                since_start = 0
            if run_index % nworkers != wid:
                continue
            for c, v in row.items():
                buffer.setdefault(c, []).append(v)
            since_start += 1
            if len(buffer["frame"]) == self.clip_length:
                if (since_start - self.clip_length) % self.stride == 0:
                    yield self._to_clip(buffer)
                buffer = {c: v[1:] for c, v in buffer.items()}
