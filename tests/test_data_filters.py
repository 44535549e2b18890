"""Frame filters on crafted arrays (no game engine needed)."""

from types import SimpleNamespace

import numpy as np
import pytest

from diffusers_yan.actions import DOOM_BUTTONS
from diffusers_yan.data.filters import (
    FilterConfig,
    count_reasons,
    filter_episode,
    is_death_frame,
    is_lag_frame,
    is_transition_frame,
    is_wall_frame,
    segments_from_mask,
)


BUTTONS = list(DOOM_BUTTONS)


def _textured(seed=0, shape=(48, 64, 3)):
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _state(x=0.0, y=0.0, angle=0.0, health=100.0, alive=True):
    return {"x": x, "y": y, "angle": angle, "health": health, "alive": alive}


def _action(*names):
    return np.array([1.0 if b in names else 0.0 for b in BUTTONS], dtype=np.float32)


def test_transition_frames():
    assert is_transition_frame(np.zeros((48, 64, 3), np.uint8))  # black loading screen
    assert is_transition_frame(np.full((48, 64, 3), 200, np.uint8))  # flat wipe colour
    assert not is_transition_frame(_textured())


def test_death_frames():
    assert is_death_frame(_state(alive=False))
    assert is_death_frame(_state(health=0.0))
    assert not is_death_frame(_state())


def test_wall_frames():
    depth = np.full((48, 64), 40, np.uint8)
    assert not is_wall_frame(depth)
    depth[:, :] = 1  # face against a wall
    assert is_wall_frame(depth)
    depth[:, :20] = 40  # a third of the view is open: still informative
    assert not is_wall_frame(depth)


def test_lag_frames():
    frame = _textured()
    # turned but the image did not change: lag
    assert is_lag_frame(frame, frame.copy(), _state(), _state(), _action("TURN_LEFT"), BUTTONS)
    # moved (state) but the image did not change: lag
    assert is_lag_frame(frame, frame.copy(), _state(), _state(x=10), _action("MOVE_FORWARD"), BUTTONS)
    # pushed against a wall: nothing moved, nothing changed -> a real frame, kept
    assert not is_lag_frame(frame, frame.copy(), _state(), _state(), _action("MOVE_FORWARD"), BUTTONS)
    # left + right cancel out
    assert not is_lag_frame(frame, frame.copy(), _state(), _state(), _action("TURN_LEFT", "TURN_RIGHT"), BUTTONS)
    # the image changed: never lag
    assert not is_lag_frame(frame, _textured(1), _state(), _state(angle=5), _action("TURN_LEFT"), BUTTONS)


def test_segments_from_mask():
    assert segments_from_mask([True, True, False, True, False, False, True]).tolist() == [0, 0, -1, 1, -1, -1, 2]
    assert segments_from_mask([False, True]).tolist() == [-1, 0]
    assert segments_from_mask([]).tolist() == []


def test_filter_episode_drops_and_counts_each_reason():
    f = [_textured(i) for i in range(8)]
    open_depth = np.full((48, 64), 40, np.uint8)
    frames = [
        SimpleNamespace(rgb=f[0], depth=open_depth, state=_state(), action=_action()),
        SimpleNamespace(rgb=f[1], depth=open_depth, state=_state(x=5), action=_action("MOVE_FORWARD")),
        SimpleNamespace(rgb=f[1].copy(), depth=open_depth, state=_state(x=5, angle=10), action=_action("TURN_LEFT")),
        SimpleNamespace(rgb=f[3], depth=np.zeros_like(open_depth), state=_state(x=9), action=_action("MOVE_FORWARD")),
        SimpleNamespace(rgb=np.zeros_like(f[0]), depth=open_depth, state=_state(x=9), action=_action()),
        SimpleNamespace(rgb=f[5], depth=open_depth, state=_state(x=9), action=_action("ATTACK")),
        SimpleNamespace(rgb=f[6], depth=open_depth, state=_state(x=9, health=0, alive=False), action=_action()),
        SimpleNamespace(rgb=f[7], depth=open_depth, state=_state(x=9), action=_action()),
    ]
    segments, reasons = filter_episode(frames, BUTTONS)
    assert reasons == [None, None, "lag", "wall", "transition", None, "death", None]
    assert segments.tolist() == [0, 0, -1, -1, -1, 1, -1, 2]
    assert count_reasons(reasons) == {"death": 1, "transition": 1, "wall": 1, "lag": 1}
    # disabled filters drop nothing
    segments, reasons = filter_episode(frames, BUTTONS, FilterConfig(enabled=()))
    assert segments.tolist() == [0] * 8 and set(reasons) == {None}


def test_filter_config_rejects_unknown_reason():
    with pytest.raises(ValueError, match="unknown filters"):
        FilterConfig(enabled=("blur",))
