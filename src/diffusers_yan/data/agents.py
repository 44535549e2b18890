"""Agents that play Doom for data collection: breadth (random, exploration) and depth (a PPO policy).

Every agent has ``reset(seed)`` and ``act(frame) -> multi-hot action`` over the dataset's buttons, and is
deterministic given its seed, so the same ``yan collect --seed`` gives the same dataset.

- :class:`RandomAgent`: human-like random play. It holds a key combination for a random number of frames
  (geometric, mean ``mean_hold``) instead of drawing white noise every frame, which would only jitter in place.
- :class:`ExploreAgent`: keeps a visit count per map cell and steers towards the least visited direction,
  turning away from walls it sees in the depth buffer.
- :class:`PPOAgent`: a stable-baselines3 PPO policy trained by ``training_examples/train_ppo_agent.py`` on
  :class:`DoomGymEnv` (scenario reward + a bonus for entering unvisited cells).

Example:

```py
>>> from diffusers_yan.data.agents import make_agent
>>> agent = make_agent("random", buttons=("MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT"))
>>> agent.reset(seed=0)
>>> agent.act(None).shape
(3,)
```
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from ..actions import DOOM_BUTTONS


AGENTS = ("random", "explore", "ppo")

# Key combinations a person plays with, and how often they pick each (random agent). Mostly walking forward
# and turning, as in real play; names missing from the dataset's buttons are dropped.
_HUMAN_COMBOS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("MOVE_FORWARD",), 0.26),
    (("MOVE_FORWARD", "TURN_LEFT"), 0.1),
    (("MOVE_FORWARD", "TURN_RIGHT"), 0.1),
    (("TURN_LEFT",), 0.1),
    (("TURN_RIGHT",), 0.1),
    (("MOVE_BACKWARD",), 0.05),
    (("MOVE_LEFT",), 0.05),
    (("MOVE_RIGHT",), 0.05),
    (("ATTACK",), 0.06),
    (("MOVE_FORWARD", "ATTACK"), 0.04),
    (("USE",), 0.04),
    ((), 0.05),  # standing still
)

# The PPO agent's discrete actions (a Discrete(n) head is far easier to learn than 2^8 combinations).
PPO_ACTIONS: tuple[tuple[str, ...], ...] = (
    ("MOVE_FORWARD",),
    ("MOVE_FORWARD", "TURN_LEFT"),
    ("MOVE_FORWARD", "TURN_RIGHT"),
    ("TURN_LEFT",),
    ("TURN_RIGHT",),
    ("MOVE_BACKWARD",),
    ("ATTACK",),
    ("USE",),
)
# PPO observation: grayscale 80x60, channel first, uint8 (SB3's CnnPolicy scales by 1/255). NatureCNN needs >= 36 px.
PPO_OBS_SIZE = (80, 60)
# Map cell (map units) for coverage counts and the exploration bonus; 64 units = the width of a Doom corridor.
CELL_SIZE = 64.0


def _multi_hot(names, buttons) -> np.ndarray:
    vec = np.zeros(len(buttons), dtype=np.float32)
    for n in names:
        if n in buttons:
            vec[buttons.index(n)] = 1.0
    return vec


def cell_of(state: dict, cell_size: float = CELL_SIZE) -> tuple[int, int]:
    """The map cell a player state is in."""
    return int(math.floor(state["x"] / cell_size)), int(math.floor(state["y"] / cell_size))


class RandomAgent:
    """Random play with held keys: a combination is held for a Geometric(1 / mean_hold) number of frames.

    Args:
        buttons: the dataset's buttons (order of the action vector).
        mean_hold: mean number of frames a combination is held. 6 frames at frame skip 4 is ~0.7 s, about how long
            a player holds a key while walking around.
    """

    def __init__(self, buttons=DOOM_BUTTONS, mean_hold: float = 6.0):
        if mean_hold < 1:
            raise ValueError(f"`mean_hold` must be >= 1 frame, got {mean_hold}.")
        self.buttons = tuple(buttons)
        self.mean_hold = mean_hold
        combos = [(c, p) for c, p in _HUMAN_COMBOS if all(b in self.buttons for b in c)]
        if len(combos) <= 1:  # unusual button set: every single button, plus standing still
            combos = [((b,), 1.0) for b in self.buttons] + [((), 0.2)]
        self.combos = [_multi_hot(c, self.buttons) for c, _ in combos]
        p = np.array([p for _, p in combos], dtype=np.float64)
        self.probs = p / p.sum()
        self.reset(0)

    def reset(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self._current = self.combos[0]
        self._left = 0

    def act(self, frame) -> np.ndarray:
        if self._left <= 0:
            self._current = self.combos[self.rng.choice(len(self.combos), p=self.probs)]
            self._left = int(self.rng.geometric(1.0 / self.mean_hold))
        self._left -= 1
        return self._current.copy()


class ExploreAgent:
    """Seeks unvisited places: steer towards the least-visited neighbouring cell, turn away from close walls.

    Args:
        buttons: the dataset's buttons; needs MOVE_FORWARD, TURN_LEFT and TURN_RIGHT.
        cell_size: map units per visit-count cell.
        look_ahead: how far (map units) ahead each candidate heading is scored.
        wall_depth: centre-of-view depth (engine units, uint8) under which the way ahead counts as blocked.
        replan_every: frames between choices of a new heading (a human commits to a direction for a while).
    """

    def __init__(
        self,
        buttons=DOOM_BUTTONS,
        cell_size: float = CELL_SIZE,
        look_ahead: float = 192.0,
        wall_depth: int = 3,
        replan_every: int = 12,
    ):
        self.buttons = tuple(buttons)
        missing = [b for b in ("MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT") if b not in self.buttons]
        if missing:
            raise ValueError(f"The explore agent needs the buttons {missing}; `buttons` is {list(self.buttons)}.")
        self.cell_size, self.look_ahead, self.wall_depth, self.replan_every = (
            cell_size,
            look_ahead,
            wall_depth,
            replan_every,
        )
        self.reset(0)

    def reset(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.visits: dict[tuple[int, int], int] = {}
        self.heading: float | None = None
        self._t = 0
        self._stuck = 0
        self._last_pos = None
        self._walked = False
        self._planned = 0

    def _score(self, state, heading_deg) -> float:
        rad = math.radians(heading_deg)
        total = 0.0
        for frac in (0.5, 1.0):
            x = state["x"] + math.cos(rad) * self.look_ahead * frac
            y = state["y"] + math.sin(rad) * self.look_ahead * frac
            total += self.visits.get(cell_of({"x": x, "y": y}, self.cell_size), 0)
        return total + self.rng.random() * 0.5  # random tie-break

    def act(self, frame) -> np.ndarray:
        if frame is None:
            return _multi_hot(("MOVE_FORWARD",), self.buttons)
        state = frame.state
        cell = cell_of(state, self.cell_size)
        self.visits[cell] = self.visits.get(cell, 0) + 1
        pos = (state["x"], state["y"])
        if self._last_pos is not None and self._walked:
            # pushed forward but did not move: something is in the way
            self._stuck = self._stuck + 1 if math.dist(pos, self._last_pos) < 2.0 else 0
        self._last_pos = pos

        h, w = frame.depth.shape
        centre = frame.depth[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
        blocked = float(np.median(centre)) < self.wall_depth or self._stuck >= 2

        def to_heading():  # signed difference, counter-clockwise positive (Doom angles grow counter-clockwise)
            return (self.heading - state["angle"] + 180) % 360 - 180

        turning = self.heading is not None and abs(to_heading()) > 15
        if self.heading is None or (not turning and (blocked or self._t - self._planned >= self.replan_every)):
            offsets = (90, 135, 180, -135, -90) if blocked else range(-180, 180, 45)
            self.heading = min((state["angle"] + d for d in offsets), key=lambda a: self._score(state, a)) % 360
            self._planned = self._t
            self._stuck = 0
        self._t += 1

        diff = to_heading()
        names = []
        if abs(diff) > 15:
            names.append("TURN_LEFT" if diff > 0 else "TURN_RIGHT")
        self._walked = abs(diff) < 60 and not (blocked and abs(diff) > 15)
        if self._walked:
            names.append("MOVE_FORWARD")
        if self._stuck >= 1 and "USE" in self.buttons and self.rng.random() < 0.3:
            names.append("USE")  # maybe a door
        return _multi_hot(names, self.buttons)


def ppo_observation(rgb: np.ndarray) -> np.ndarray:
    """RGB frame [H, W, 3] uint8 -> PPO observation [1, 60, 80] uint8 (grayscale)."""
    from PIL import Image

    img = Image.fromarray(rgb).convert("L").resize(PPO_OBS_SIZE, Image.BILINEAR)
    return np.array(img, dtype=np.uint8)[None]  # a writable copy (torch warns on read-only arrays)


class PPOAgent:
    """Plays with a stable-baselines3 PPO policy saved by ``training_examples/train_ppo_agent.py``.

    Args:
        model_path: the policy ``.zip``.
        buttons: the dataset's buttons; the policy's :data:`PPO_ACTIONS` are mapped onto them.
        deterministic: take the policy's most likely action instead of sampling from it. Sampling (the default)
            gives more varied data; the sampling rng is seeded by :meth:`reset`.
    """

    def __init__(self, model_path: str, buttons=DOOM_BUTTONS, deterministic: bool = False):
        import os

        if not model_path or not os.path.exists(model_path):
            raise FileNotFoundError(
                f"`ppo_model`: no PPO policy at {model_path!r}. Train one with"
                " `python training_examples/train_ppo_agent.py --out ppo_doom.zip` and pass --ppo-model ppo_doom.zip."
            )
        from stable_baselines3 import PPO

        self.model = PPO.load(model_path, device="cpu")
        self.buttons = tuple(buttons)
        self.actions = [_multi_hot(c, self.buttons) for c in PPO_ACTIONS]
        self.deterministic = deterministic
        self.reset(0)

    def reset(self, seed: int):
        import torch

        self.rng = np.random.default_rng(seed)
        self._torch_gen = torch.Generator().manual_seed(int(seed))

    def act(self, frame) -> np.ndarray:
        import torch

        if frame is None:
            return self.actions[0].copy()
        with torch.no_grad():
            obs_t, _ = self.model.policy.obs_to_tensor(ppo_observation(frame.rgb)[None])
            dist = self.model.policy.get_distribution(obs_t)
            probs = dist.distribution.probs[0].double().numpy()
        idx = int(np.argmax(probs)) if self.deterministic else int(self.rng.choice(len(probs), p=probs / probs.sum()))
        return self.actions[idx].copy()


def make_agent(name: str, buttons=DOOM_BUTTONS, ppo_model: str | None = None, **kwargs):
    """Build an agent by name: one of :data:`AGENTS`."""
    if name == "random":
        return RandomAgent(buttons, **kwargs)
    if name == "explore":
        return ExploreAgent(buttons, **kwargs)
    if name == "ppo":
        return PPOAgent(ppo_model, buttons, **kwargs)
    raise ValueError(f"Unknown agent {name!r}. Valid agents: {', '.join(AGENTS)}.")


class DoomGymEnv(gym.Env):
    """A gymnasium env over :class:`~diffusers_yan.data.env.DoomEnv` for PPO training.

    Observation: :func:`ppo_observation` of the frame. Action: ``Discrete(len(PPO_ACTIONS))``. Reward: the
    scenario's reward plus ``coverage_bonus`` for each map cell entered for the first time in the episode (so the
    policy learns to go places, which is what the data needs; scenario rewards alone are sparse). ``info`` carries
    the episode's ``coverage`` (cells visited) and ``scenario_return`` (reward without the bonus).
    """

    metadata = {"render_modes": []}

    def __init__(self, config, coverage_bonus: float = 0.05, seed: int = 0):
        from .env import DoomEnv

        self.env = DoomEnv(config)
        self.buttons = tuple(config.buttons)
        self.actions = [_multi_hot(c, self.buttons) for c in PPO_ACTIONS]
        self.coverage_bonus = coverage_bonus
        self.observation_space = gym.spaces.Box(0, 255, (1, PPO_OBS_SIZE[1], PPO_OBS_SIZE[0]), np.uint8)
        self.action_space = gym.spaces.Discrete(len(PPO_ACTIONS))
        self._episode_seed = seed
        self._last = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._episode_seed = seed
        self._episode_seed += 1
        self._last = self.env.reset(self._episode_seed)
        self.visited = {cell_of(self._last.state)}
        return ppo_observation(self._last.rgb), {"coverage": 1, "scenario_return": 0.0}

    def step(self, action):
        frame = self.env.step(self.actions[int(action)])
        reward = self.env.last_reward
        ended = frame is None
        if not ended:
            cell = cell_of(frame.state)
            if cell not in self.visited:
                self.visited.add(cell)
                reward += self.coverage_bonus
            self._last = frame
        truncated = ended and not self.env.game.is_episode_finished()  # our max_steps, not the game, ended it
        info = {"coverage": len(self.visited), "scenario_return": self.env.total_reward}
        return ppo_observation(self._last.rgb), reward, ended and not truncated, truncated, info

    def close(self):
        self.env.close()
