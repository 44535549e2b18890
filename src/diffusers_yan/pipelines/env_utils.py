"""Helpers shared by the gymnasium environments over the Yan pipelines (:class:`YanSimEnv`, :class:`YanGenEnv`)."""

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from ..actions import ActionSpace


def gym_action_space(action_space: ActionSpace) -> spaces.Space:
    """The gymnasium space of ``action_space``: ``MultiBinary(num_buttons)``, or, when the model has continuous axes,
    ``Dict({"buttons": MultiBinary(num_buttons), "axes": Box(-1, 1, (num_axes,))})``."""
    buttons = spaces.MultiBinary(len(action_space.buttons))
    if not action_space.axes:
        return buttons
    axes = spaces.Box(-1.0, 1.0, (len(action_space.axes),), dtype=np.float32)
    return spaces.Dict({"buttons": buttons, "axes": axes})


def encode_env_action(action_space: ActionSpace, action: Any) -> torch.Tensor:
    """One env action as the model's action vector: a sample of :func:`gym_action_space` (a ``{"buttons", "axes"}``
    dict included), or anything :meth:`ActionSpace.encode` accepts (names, ``"A+B"``, multi-hot vectors, ...)."""
    if isinstance(action, dict) and set(action) == {"buttons", "axes"}:
        action = np.concatenate([np.asarray(action["buttons"], np.float32), np.asarray(action["axes"], np.float32)])
    return action_space.encode(action, arg="action")
