"""Typed action spaces: button names, optional continuous axes, keyboard bindings, and encoding to tensors.

An :class:`ActionSpace` lives in a model's config (``unet.config.action_space`` as a plain dict), so a saved
model always knows which buttons it was trained on. Every public entry point that takes actions goes through
:meth:`ActionSpace.encode_sequence`, which accepts, for each step, any of:

- a button name (``"MOVE_FORWARD"``), several joined with ``+`` (``"MOVE_FORWARD+TURN_LEFT"``), or ``"NOOP"`` / ``""``;
- a list/tuple/set of button names (``["MOVE_FORWARD", "TURN_LEFT"]``);
- a dict ``{name: value}`` with buttons as 0/1 (or bool) and axes as floats in their declared range;
- a numeric vector of length :attr:`ActionSpace.dim` (multi-hot buttons followed by normalised axes).

Anything else raises ``ValueError``/``TypeError`` naming the argument and listing what is allowed.

Example:

```py
>>> from diffusers_yan import ActionSpace
>>> space = ActionSpace()  # the 8 ViZDoom buttons used by our Doom models
>>> space.encode_sequence(["MOVE_FORWARD", "TURN_LEFT+ATTACK", "NOOP"]).shape
torch.Size([3, 8])
>>> space.parse("MOVE_FORWARD*2,TURN_LEFT")
['MOVE_FORWARD', 'MOVE_FORWARD', 'TURN_LEFT']
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch


# The 8 buttons of our Doom models (the paper's Yan-Sim also has 8 actions). Names are ViZDoom `Button` names,
# so a dataset collected with these buttons maps one-to-one onto the model's action space.
DOOM_BUTTONS: tuple[str, ...] = (
    "MOVE_FORWARD",
    "MOVE_BACKWARD",
    "MOVE_LEFT",
    "MOVE_RIGHT",
    "TURN_LEFT",
    "TURN_RIGHT",
    "ATTACK",
    "USE",
)

# Keyboard bindings use browser `KeyboardEvent.code` names (layout independent: "KeyW" is the key where W sits
# on a QWERTY keyboard). Several keys may map to one button.
DOOM_KEY_BINDINGS: dict[str, str] = {
    "KeyW": "MOVE_FORWARD",
    "ArrowUp": "MOVE_FORWARD",
    "KeyS": "MOVE_BACKWARD",
    "ArrowDown": "MOVE_BACKWARD",
    "KeyA": "MOVE_LEFT",
    "KeyD": "MOVE_RIGHT",
    "ArrowLeft": "TURN_LEFT",
    "KeyQ": "TURN_LEFT",
    "ArrowRight": "TURN_RIGHT",
    "KeyE": "TURN_RIGHT",
    "Space": "ATTACK",
    "KeyF": "USE",
}

NOOP_NAMES = ("", "NOOP", "NONE")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating, bool, np.bool_))


@dataclass(frozen=True)
class ActionSpace:
    """A named, typed action space.

    Args:
        buttons: names of the binary buttons, in the order of the encoded vector.
        axes: continuous axes as ``{name: (low, high)}``; encoded after the buttons, scaled to ``[-1, 1]``.
        key_bindings: ``{KeyboardEvent.code: button name}`` for keyboard play. Defaults to the Doom bindings
            restricted to the buttons that exist in this space.
    """

    buttons: tuple[str, ...] = DOOM_BUTTONS
    axes: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    key_bindings: Mapping[str, str] | None = None

    def __post_init__(self):
        buttons = tuple(str(b) for b in self.buttons)
        if len(buttons) == 0 and len(self.axes) == 0:
            raise ValueError("`buttons` and `axes` are both empty: an action space needs at least one of them.")
        names = list(buttons) + list(self.axes)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"`buttons`/`axes` contain duplicated names {dupes}; every name must be unique.")
        for n in names:
            if n.upper() in NOOP_NAMES or "+" in n or "*" in n or "," in n:
                raise ValueError(f"Invalid action name {n!r}: names may not be empty/NOOP or contain '+', '*' or ','.")
        axes = {}
        for name, rng in dict(self.axes).items():
            try:
                low, high = (float(v) for v in rng)
            except (TypeError, ValueError):
                raise ValueError(f"Axis {name!r} must have a (low, high) range, got {rng!r}.") from None
            if not high > low:
                raise ValueError(f"Axis {name!r} needs low < high, got ({low}, {high}).")
            axes[name] = (low, high)
        if self.key_bindings is None:
            bindings = {k: b for k, b in DOOM_KEY_BINDINGS.items() if b in buttons}
        else:
            bindings = {str(k): str(b) for k, b in dict(self.key_bindings).items()}
            unknown = sorted({b for b in bindings.values() if b not in buttons})
            if unknown:
                raise ValueError(
                    f"`key_bindings` map keys to unknown buttons {unknown}; known buttons are {list(buttons)}."
                )
        object.__setattr__(self, "buttons", buttons)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "key_bindings", bindings)

    # ------------------------------------------------------------------ config round trip
    @property
    def dim(self) -> int:
        """Length of an encoded action vector: one entry per button, then one per axis."""
        return len(self.buttons) + len(self.axes)

    @property
    def names(self) -> tuple[str, ...]:
        return self.buttons + tuple(self.axes)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict, as stored in model configs."""
        return {
            "buttons": list(self.buttons),
            "axes": {k: list(v) for k, v in self.axes.items()},
            "key_bindings": dict(self.key_bindings),
        }

    @classmethod
    def from_dict(cls, config: Mapping | "ActionSpace" | None) -> "ActionSpace":
        """Build from :meth:`to_dict` output (or a list of button names). ``None`` gives the Doom default."""
        if config is None:
            return cls()
        if isinstance(config, ActionSpace):
            return config
        if isinstance(config, (list, tuple)):
            return cls(buttons=tuple(config))
        if not isinstance(config, Mapping):
            raise TypeError(
                f"`action_space` must be a dict, a list of button names or an ActionSpace, got {type(config)}."
            )
        unknown = set(config) - {"buttons", "axes", "key_bindings"}
        if unknown:
            raise ValueError(
                f"`action_space` has unknown keys {sorted(unknown)}; expected buttons, axes, key_bindings."
            )
        return cls(
            buttons=tuple(config.get("buttons", DOOM_BUTTONS)),
            axes={k: tuple(v) for k, v in dict(config.get("axes", {})).items()},
            key_bindings=config.get("key_bindings"),
        )

    # ------------------------------------------------------------------ encoding
    def _allowed(self) -> str:
        parts = [f"buttons {list(self.buttons)}"]
        if self.axes:
            parts.append(f"axes {dict(self.axes)}")
        return (
            " and ".join(parts)
            + f"; an action is a button name (or names joined with '+', or 'NOOP'), a list of names, a dict"
            f" {{name: value}}, or a numeric vector of length {self.dim}"
        )

    def _check_name(self, name: str, arg: str) -> str:
        if name not in self.buttons:
            if name in self.axes:
                raise ValueError(
                    f"`{arg}`: {name!r} is a continuous axis; give it as a dict {{{name!r}: value}} with a value in"
                    f" {self.axes[name]}."
                )
            raise ValueError(f"`{arg}`: unknown action {name!r}. Allowed: {self._allowed()}.")
        return name

    def encode(self, action: Any, arg: str = "action") -> torch.Tensor:
        """Encode a single action to a float tensor of shape ``[dim]``."""
        vec = torch.zeros(self.dim, dtype=torch.float32)
        if isinstance(action, str):
            names = [] if action.strip().upper() in NOOP_NAMES else [s.strip() for s in action.split("+")]
            for n in names:
                vec[self.buttons.index(self._check_name(n, arg))] = 1.0
            return vec
        if isinstance(action, Mapping):
            for name, value in action.items():
                if name in self.buttons:
                    if not _is_number(value) or float(value) not in (0.0, 1.0):
                        raise ValueError(f"`{arg}`: button {name!r} must be 0/1 or a bool, got {value!r}.")
                    vec[self.buttons.index(name)] = float(value)
                elif name in self.axes:
                    low, high = self.axes[name]
                    if not _is_number(value) or not (low <= float(value) <= high):
                        raise ValueError(f"`{arg}`: axis {name!r} must be a number in [{low}, {high}], got {value!r}.")
                    vec[len(self.buttons) + list(self.axes).index(name)] = 2 * (float(value) - low) / (high - low) - 1
                else:
                    raise ValueError(f"`{arg}`: unknown action {name!r}. Allowed: {self._allowed()}.")
            return vec
        if isinstance(action, (torch.Tensor, np.ndarray)) or (
            isinstance(action, (list, tuple)) and len(action) > 0 and all(_is_number(a) for a in action)
        ):
            arr = torch.as_tensor(np.asarray(action.detach().cpu() if isinstance(action, torch.Tensor) else action))
            if arr.ndim != 1 or arr.shape[0] != self.dim:
                raise ValueError(
                    f"`{arg}`: a numeric action must be a vector of length {self.dim} ({list(self.names)}),"
                    f" got shape {tuple(arr.shape)}."
                )
            arr = arr.to(torch.float32)
            if not torch.isfinite(arr).all():
                raise ValueError(f"`{arg}`: numeric action contains NaN or inf: {arr.tolist()}.")
            nb = len(self.buttons)
            if not torch.isin(arr[:nb], torch.tensor([0.0, 1.0])).all():
                raise ValueError(f"`{arg}`: button entries must be 0 or 1 (multi-hot), got {arr[:nb].tolist()}.")
            if (arr[nb:].abs() > 1.0).any():
                raise ValueError(
                    f"`{arg}`: axis entries of a numeric action are normalised to [-1, 1], got {arr[nb:].tolist()}."
                )
            return arr
        if isinstance(action, (list, tuple, set, frozenset)):
            for n in action:
                if not isinstance(n, str):
                    raise TypeError(f"`{arg}`: a list of pressed buttons must hold names (str), got {n!r}.")
                if n.strip().upper() in NOOP_NAMES:
                    continue
                vec[self.buttons.index(self._check_name(n.strip(), arg))] = 1.0
            return vec
        raise TypeError(f"`{arg}` has unsupported type {type(action).__name__}. {self._allowed()}.")

    def encode_sequence(self, actions: Any, arg: str = "actions") -> torch.Tensor:
        """Encode a sequence of actions to a float tensor ``[num_steps, dim]``.

        A single action (a string, a dict, or one numeric vector of length ``dim``) counts as a sequence of one.
        A top-level list is a sequence of steps: ``["MOVE_FORWARD", "TURN_LEFT"]`` is two steps, while
        ``[["MOVE_FORWARD", "TURN_LEFT"]]`` is one step with two buttons held.
        """
        if actions is None:
            raise ValueError(f"`{arg}` is None; pass at least one action. Allowed: {self._allowed()}.")
        if isinstance(actions, str):
            actions = self.parse(actions) if ("," in actions or "*" in actions) else [actions]
        elif isinstance(actions, Mapping):
            actions = [actions]
        elif isinstance(actions, (torch.Tensor, np.ndarray)):
            arr = actions.detach().cpu() if isinstance(actions, torch.Tensor) else actions
            if arr.ndim == 1:
                actions = [arr]
            elif arr.ndim == 2:
                actions = list(arr)
            else:
                raise ValueError(
                    f"`{arg}`: a numeric array must be [num_steps, {self.dim}], got shape {tuple(arr.shape)}."
                )
        elif isinstance(actions, (list, tuple)) and len(actions) > 0 and all(_is_number(a) for a in actions):
            actions = [actions]
        if not isinstance(actions, (list, tuple)):
            raise TypeError(f"`{arg}` must be a list of actions, got {type(actions).__name__}. {self._allowed()}.")
        if len(actions) == 0:
            raise ValueError(f"`{arg}` is empty; pass at least one action.")
        return torch.stack([self.encode(a, arg=f"{arg}[{i}]") for i, a in enumerate(actions)])

    def decode(self, vector: torch.Tensor | Sequence[float]) -> dict[str, float]:
        """Inverse of :meth:`encode` for one vector: ``{button: 0/1, axis: value in its range}``."""
        v = torch.as_tensor(vector, dtype=torch.float32).flatten()
        if v.numel() != self.dim:
            raise ValueError(f"`vector` must have {self.dim} entries, got {v.numel()}.")
        out = {b: float(v[i] > 0.5) for i, b in enumerate(self.buttons)}
        for j, (name, (low, high)) in enumerate(self.axes.items()):
            out[name] = low + (float(v[len(self.buttons) + j]) + 1) * (high - low) / 2
        return out

    def pressed(self, vector: torch.Tensor | Sequence[float]) -> list[str]:
        """Names of the buttons pressed in an encoded vector."""
        d = self.decode(vector)
        return [b for b in self.buttons if d[b] > 0.5]

    def parse(self, spec: str, arg: str = "actions") -> list[str]:
        """Parse ``"MOVE_FORWARD*8,TURN_LEFT+ATTACK*2,NOOP"`` into a list of per-step actions (repeats expanded)."""
        if not isinstance(spec, str):
            raise TypeError(f"`{arg}` must be a string like 'MOVE_FORWARD*8,TURN_LEFT*4', got {type(spec).__name__}.")
        steps: list[str] = []
        for i, part in enumerate(p.strip() for p in spec.split(",")):
            if not part:
                raise ValueError(f"`{arg}`: empty entry at position {i} in {spec!r}.")
            name, _, count = part.partition("*")
            name = name.strip()
            try:
                n = int(count) if count else 1
            except ValueError:
                raise ValueError(f"`{arg}`: repeat count in {part!r} must be an integer.") from None
            if n < 1:
                raise ValueError(f"`{arg}`: repeat count in {part!r} must be >= 1.")
            self.encode(name, arg=arg)  # validates names
            steps.extend([name] * n)
        return steps

    def keys_to_action(self, pressed_keys: Iterable[str]) -> torch.Tensor:
        """Encode the set of currently held keys (``KeyboardEvent.code`` names) to an action vector.

        Keys without a binding are ignored (a browser sends many keys the game does not use).
        """
        names = {self.key_bindings[k] for k in pressed_keys if k in self.key_bindings}
        return self.encode(sorted(names), arg="pressed_keys")

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random action vector (buttons Bernoulli(0.5), axes uniform), for smoke tests and random agents."""
        buttons = torch.randint(0, 2, (len(self.buttons),), generator=generator).float()
        axes = torch.rand(len(self.axes), generator=generator) * 2 - 1
        return torch.cat([buttons, axes])
