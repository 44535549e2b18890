"""Hierarchical captions (Yan-Gen stage 1): a global caption per episode and a local caption per clip.

By default the captions are grounded in the engine, which knows the truth:

- global: the scenario or map, its layout (size, number of sectors, levels, from the engine's sector info), and the
  dominant colours and lighting of the frames;
- local: what the player does (from the actions), visible objects from the labels buffer with a rough position
  (left/ahead/right, near/far), and events from state deltas (damage, pick-ups, kills, doors, death).

:class:`VLMCaptioner` writes them with a vision-language model through transformers instead (a Qwen2.5-VL class
model, as in the Yan report); it is opt-in (``yan collect --captioner vlm --vlm-model PATH``).

Example:

```py
>>> import numpy as np
>>> from diffusers_yan.data.captions import global_caption, local_caption
>>> frames = [np.full((48, 64, 3), (120, 80, 50), np.uint8)]
>>> global_caption("my_way_home", None, {"num_sectors": 40, "width": 1800.0, "height": 900.0, "floor_levels": 1}, frames)
'Doom, the my_way_home scenario: a maze of many small rooms and corridors (about 1800x900 map units) on one level. Dominant colours: brown; dim lighting.'
>>> local_caption([{"labels": [{"name": "Medikit", "x": 2, "y": 30, "w": 6, "h": 4}], "events": ["damage"],
...                 "action": {"MOVE_FORWARD": 1.0}}], width=64, height=48)
'The player moves forward. Visible: a medikit on the left, far. Events: takes damage.'
```
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import numpy as np


logger = logging.getLogger(__name__)

# Labels that are effects, not objects a caption should name.
_EFFECT_LABELS = {"BulletPuff", "Blood", "TeleportFog", "ItemFog", "RocketSmokeTrail", "PlasmaBall", "DoomPlayer"}
_EVENT_WORDS = {
    "damage": "takes damage",
    "pickup": "picks up an item",
    "kill": "kills an enemy",
    "door": "a door or lift moves",
    "death": "dies",
}
_ACTION_WORDS = {
    "MOVE_FORWARD": "moves forward",
    "MOVE_BACKWARD": "steps back",
    "MOVE_LEFT": "strafes left",
    "MOVE_RIGHT": "strafes right",
    "TURN_LEFT": "turns left",
    "TURN_RIGHT": "turns right",
    "ATTACK": "fires",
    "USE": "presses use",
}
# Named colours for "dominant colours" (RGB centres, nearest wins).
_PALETTE = {
    "black": (15, 15, 15),
    "dark grey": (60, 60, 60),
    "grey": (120, 120, 120),
    "light grey": (190, 190, 190),
    "brown": (110, 75, 45),
    "tan": (170, 140, 100),
    "red": (160, 30, 30),
    "orange": (200, 120, 40),
    "yellow": (200, 190, 60),
    "green": (50, 120, 50),
    "dark green": (30, 60, 30),
    "blue": (50, 60, 160),
    "purple": (110, 50, 120),
}


def _words(name: str) -> str:
    """``"ShotgunGuy"`` -> ``"shotgun guy"``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z0-9])", " ", name).lower()


def dominant_colours(frames, top: int = 2) -> tuple[list[str], str]:
    """Dominant colour names and a lighting word (dark / dim / bright) of RGB frames ``[H, W, 3]`` uint8."""
    pixels = np.concatenate([np.asarray(f)[::4, ::4].reshape(-1, 3) for f in frames]).astype(np.float32)
    names = list(_PALETTE)
    centres = np.array([_PALETTE[n] for n in names], dtype=np.float32)
    nearest = np.argmin(((pixels[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    counts = Counter(nearest.tolist())
    colours = [names[i] for i, _ in counts.most_common(top)]
    luma = float((pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean())
    lighting = "dark" if luma < 45 else "dim" if luma < 110 else "bright"
    return colours, lighting


def _layout_words(layout: dict) -> str:
    n = int(layout.get("num_sectors", 0))
    if n <= 2:
        shape = "a single open area"
    elif n <= 12:
        shape = "a few connected rooms"
    else:
        shape = "a maze of many small rooms and corridors"
    if "width" in layout:
        shape += f" (about {layout['width']:.0f}x{layout['height']:.0f} map units)"
    levels = int(layout.get("floor_levels", 1))
    shape += " on one level" if levels <= 1 else " with stairs and raised floors" if levels <= 4 else " on many levels"
    return shape


def global_caption(scenario: str, map_name: str | None, layout: dict, frames) -> str:
    """The episode-level caption: what world, its layout, its colours and lighting."""
    where = f"Freedoom map {map_name}" if map_name else f"the {scenario} scenario"
    colours, lighting = dominant_colours(frames) if len(frames) else ([], "dim")
    colour_text = f"Dominant colours: {' and '.join(colours)}; " if colours else ""
    return f"Doom, {where}: {_layout_words(layout)}. {colour_text}{lighting} lighting."


def _where(label: dict, width: int, height: int) -> str:
    cx = (label["x"] + label["w"] / 2) / width
    side = "on the left" if cx < 1 / 3 else "on the right" if cx > 2 / 3 else "ahead"
    dist = "close" if label["h"] / height > 0.35 else "far" if label["h"] / height < 0.12 else "at mid range"
    return f"{side}, {dist}"


def local_caption(frames: list[dict], width: int, height: int, max_objects: int = 4) -> str:
    """The clip-level caption from per-frame ``labels``, ``events`` and ``action`` (a ``{button: 0/1}`` dict).

    Objects are listed by how many frames they are seen in, with where they are in the frame where they look
    biggest.
    """
    pressed = Counter()
    for f in frames:
        for b, v in (f.get("action") or {}).items():
            if v > 0.5:
                pressed[b] += 1
    # a button held in at least a third of the clip describes what the player does
    doing = [_ACTION_WORDS.get(b, _words(b)) for b, c in pressed.most_common() if c >= max(1, len(frames) / 3)]
    sentence = f"The player {' and '.join(doing[:3])}." if doing else "The player stands still."

    seen: Counter = Counter()
    biggest: dict[str, dict] = {}
    for f in frames:
        for lab in f.get("labels") or []:
            if lab["name"] in _EFFECT_LABELS:
                continue
            seen[lab["name"]] += 1
            if lab["name"] not in biggest or lab["h"] > biggest[lab["name"]]["h"]:
                biggest[lab["name"]] = lab
    if seen:
        objs = [f"a {_words(n)} {_where(biggest[n], width, height)}" for n, _ in seen.most_common(max_objects)]
        sentence += " Visible: " + "; ".join(objs) + "."
    else:
        sentence += " No objects in view."
    events = sorted({e for f in frames for e in (f.get("events") or [])}, key=list(_EVENT_WORDS).index)
    if events:
        sentence += " Events: " + ", ".join(_EVENT_WORDS[e] for e in events if e in _EVENT_WORDS) + "."
    return sentence


class VLMCaptioner:
    """Captions frames with a transformers vision-language model (a Qwen2.5-VL class ``...ForConditionalGeneration``).

    Args:
        model: the model (any transformers image-text-to-text model with ``generate``).
        processor: its processor (chat template + image processor + tokenizer).
        max_new_tokens: caption length limit.

    Example (needs a downloaded model, so not run in tests):

    ```py
    >>> captioner = VLMCaptioner.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")  # doctest: +SKIP
    >>> captioner.caption([frame_rgb], GLOBAL_PROMPT)  # doctest: +SKIP
    ```
    """

    GLOBAL_PROMPT = (
        "This is a frame from the game Doom. In one or two sentences, describe the place: its layout, theme, "
        "dominant colours and lighting."
    )
    LOCAL_PROMPT = (
        "These are frames from a short clip of the game Doom. In one sentence, describe what the player does, "
        "which objects or monsters are visible and where, and any events."
    )

    def __init__(self, model, processor, max_new_tokens: int = 48):
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(cls, path: str, **kwargs):
        """Load a model and processor from a local folder or Hub id (``AutoModelForImageTextToText``)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(path)
        processor = AutoProcessor.from_pretrained(path)
        return cls(model, processor, **kwargs)

    def caption(self, images, prompt: str) -> str:
        """Caption a list of RGB frames (``[H, W, 3]`` uint8 arrays or PIL images) with ``prompt``."""
        import torch
        from PIL import Image

        images = [Image.fromarray(im) if isinstance(im, np.ndarray) else im for im in images]
        messages = [
            {"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]}
        ]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=[text], images=images, return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()
