"""Frame filters: drop frames a world model should not learn from, and count why.

Reasons (the keys of ``filter_counts`` in ``yan_dataset.json``):

- ``"lag"``: the engine state says the view changed (the player turned or moved) but the pixels did not, i.e. the
  renderer lagged behind the game. Walking into a wall (state unchanged, frame unchanged) is *kept*: "nothing
  happens when you push against a wall" is worth learning.
- ``"transition"``: loading / transition screens: an (almost) flat image, e.g. black frames or a wipe.
- ``"death"``: the player is dead (death cam, then the respawn wait).
- ``"wall"``: the view is blocked by a wall at point-blank range (most of the depth buffer is ~0), which carries no
  information about the world.

Each filter is a pure function on arrays, so it can be tested on crafted inputs, and :func:`filter_episode` runs
them all and splits the kept frames into contiguous segments (a clip must never jump over a dropped frame).

Example:

```py
>>> import numpy as np
>>> from diffusers_yan.data.filters import is_transition_frame, is_wall_frame
>>> is_transition_frame(np.zeros((48, 64, 3), np.uint8))
True
>>> is_wall_frame(np.zeros((48, 64), np.uint8))
True
```
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


FILTER_REASONS = ("death", "transition", "wall", "lag")
# Buttons that always change the view when the engine runs (turning rotates the camera even against a wall).
_VIEW_BUTTONS = ("TURN_LEFT", "TURN_RIGHT")


@dataclass
class FilterConfig:
    """Thresholds of the filters (defaults tuned on 64x48 to 320x240 ViZDoom frames).

    Args:
        lag_pixel_threshold: mean absolute pixel difference (0-255) under which two frames count as identical.
            Turning by one frame-skip step changes the mean by > 5 in every scenario we looked at; 0.5 only
            catches truly frozen frames.
        lag_move_threshold: map units the player must move (or degrees it must turn) for the view to change.
        transition_std: pixel standard deviation under which a frame is flat (black, loading, wipe).
        wall_depth: depth value (engine units, uint8) under which a pixel is "at point-blank range".
        wall_fraction: fraction of such pixels above which the view counts as blocked.
        enabled: reasons to apply (others are never dropped).
    """

    lag_pixel_threshold: float = 0.5
    lag_move_threshold: float = 1.0
    transition_std: float = 4.0
    wall_depth: int = 2
    wall_fraction: float = 0.85
    enabled: tuple[str, ...] = FILTER_REASONS

    def __post_init__(self):
        unknown = [r for r in self.enabled if r not in FILTER_REASONS]
        if unknown:
            raise ValueError(f"`enabled`: unknown filters {unknown}; valid ones are {list(FILTER_REASONS)}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["enabled"] = list(self.enabled)
        return d


def is_transition_frame(rgb: np.ndarray, std_threshold: float = 4.0) -> bool:
    """True for a flat frame (loading screen, black transition, screen wipe)."""
    return float(np.asarray(rgb, dtype=np.float32).std()) < std_threshold


def is_death_frame(state: dict) -> bool:
    """True when the player is dead."""
    return (not bool(state.get("alive", True))) or float(state.get("health", 1.0)) <= 0


def is_wall_frame(depth: np.ndarray, wall_depth: int = 2, wall_fraction: float = 0.85) -> bool:
    """True when most of the depth buffer is at point-blank range (the camera is against a wall)."""
    depth = np.asarray(depth)
    return float((depth <= wall_depth).mean()) > wall_fraction


def is_lag_frame(
    prev_rgb: np.ndarray,
    rgb: np.ndarray,
    prev_state: dict,
    state: dict,
    action: np.ndarray,
    buttons,
    pixel_threshold: float = 0.5,
    move_threshold: float = 1.0,
) -> bool:
    """True when the view should have changed (a turn was pressed, or the player moved/turned) but no pixel did."""
    diff = float(np.abs(np.asarray(rgb, np.int16) - np.asarray(prev_rgb, np.int16)).mean())
    if diff >= pixel_threshold:
        return False
    # exactly one turn key: TURN_LEFT + TURN_RIGHT cancel out
    turned_key = sum(float(action[buttons.index(b)]) > 0.5 for b in _VIEW_BUTTONS if b in buttons) == 1
    moved = np.hypot(state["x"] - prev_state["x"], state["y"] - prev_state["y"]) > move_threshold
    angle_delta = abs((state["angle"] - prev_state["angle"] + 180) % 360 - 180)
    return bool(turned_key or moved or angle_delta > move_threshold)


def filter_episode(frames, buttons, config: FilterConfig | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Run every enabled filter over an episode.

    Args:
        frames: a sequence of objects with ``rgb``, ``depth``, ``state`` and ``action`` (e.g. :class:`DoomFrame`).
        buttons: button names of the action vectors.

    Returns:
        ``(segment_ids, reasons)``: ``segment_ids[i]`` is the contiguous segment frame ``i`` belongs to, or -1 if it
        was dropped; ``reasons[i]`` is why it was dropped (``None`` if kept). The first matching reason in
        :data:`FILTER_REASONS` order wins, so each dropped frame is counted once.
    """
    config = config or FilterConfig()
    buttons = list(buttons)
    reasons: list[str | None] = []
    for i, f in enumerate(frames):
        reason = None
        if "death" in config.enabled and is_death_frame(f.state):
            reason = "death"
        elif "transition" in config.enabled and is_transition_frame(f.rgb, config.transition_std):
            reason = "transition"
        elif "wall" in config.enabled and is_wall_frame(f.depth, config.wall_depth, config.wall_fraction):
            reason = "wall"
        elif (
            "lag" in config.enabled
            and i > 0
            and is_lag_frame(
                frames[i - 1].rgb,
                f.rgb,
                frames[i - 1].state,
                f.state,
                f.action,
                buttons,
                config.lag_pixel_threshold,
                config.lag_move_threshold,
            )
        ):
            reason = "lag"
        reasons.append(reason)
    return segments_from_mask([r is None for r in reasons]), reasons


def segments_from_mask(keep) -> np.ndarray:
    """``[True, True, False, True]`` -> ``[0, 0, -1, 1]``: a new segment starts after every dropped frame."""
    seg = np.full(len(keep), -1, dtype=np.int64)
    current, prev_kept = -1, False
    for i, k in enumerate(keep):
        if k:
            if not prev_kept:
                current += 1
            seg[i] = current
        prev_kept = bool(k)
    return seg


def count_reasons(reasons) -> dict[str, int]:
    """``{reason: number of dropped frames}`` over all :data:`FILTER_REASONS` (zeros included)."""
    counts = dict.fromkeys(FILTER_REASONS, 0)
    for r in reasons:
        if r is not None:
            counts[r] += 1
    return counts
