"""A headless ViZDoom environment adapter: scenario or Freedoom map, resolution, frame skip, a fixed button set.

Each step returns a :class:`DoomFrame` with the RGB frame, the depth buffer, a summary of the object labels
(name and screen box, rescaled to the output resolution), the player state (x, y, z, angle, health, alive) and the
engine events since the previous frame (damage, pick-ups, kills, doors). ``vizdoom`` is imported inside
:class:`DoomEnv` only, so the rest of :mod:`diffusers_yan.data` works without the engine installed.

Example:

```py
>>> from diffusers_yan.data.env import DoomEnv, DoomEnvConfig
>>> env = DoomEnv(DoomEnvConfig(scenario="my_way_home", resolution=(64, 48)))
>>> frame = env.reset(seed=0)
>>> frame.rgb.shape, frame.depth.shape, frame.state["alive"]
((48, 64, 3), (48, 64), True)
>>> frame = env.step([1, 0, 0, 0, 0, 0, 0, 0])  # MOVE_FORWARD for `frame_skip` tics
>>> env.close()
```
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ..actions import DOOM_BUTTONS


# Scenario configs shipped with vizdoom (`vizdoom.scenarios_path`). Listed here (not discovered) so that
# `yan collect --help` and argument validation work without importing the engine; `available_scenarios()`
# intersects this list with what the installed vizdoom really ships.
KNOWN_SCENARIOS: tuple[str, ...] = (
    "basic",
    "deadly_corridor",
    "deathmatch",
    "defend_the_center",
    "defend_the_line",
    "freedoom1",
    "freedoom2",
    "health_gathering",
    "health_gathering_supreme",
    "my_way_home",
    "predict_position",
    "rocket_basic",
    "simpler_basic",
    "take_cover",
)
# Full-game scenarios take a `--map`: Freedoom Phase 2 has MAP01..MAP32, Phase 1 has E1M1..E4M9.
FREEDOOM2_MAPS: tuple[str, ...] = tuple(f"MAP{i:02d}" for i in range(1, 33))
FREEDOOM1_MAPS: tuple[str, ...] = tuple(f"E{e}M{m}" for e in range(1, 5) for m in range(1, 10))
MAPS_BY_SCENARIO: dict[str, tuple[str, ...]] = {"freedoom2": FREEDOOM2_MAPS, "freedoom1": FREEDOOM1_MAPS}

# Game variables read every step, in this order. DEAD is 1 after death; counts give pick-up/kill events.
_STATE_VARIABLES = (
    "POSITION_X",
    "POSITION_Y",
    "POSITION_Z",
    "ANGLE",
    "HEALTH",
    "ARMOR",
    "DEAD",
    "KILLCOUNT",
    "ITEMCOUNT",
    "SELECTED_WEAPON_AMMO",
)
# Labels of the player itself are not "visible objects".
_IGNORED_LABELS = ("DoomPlayer",)


def available_scenarios() -> list[str]:
    """Scenario names accepted by :class:`DoomEnvConfig` (those of :data:`KNOWN_SCENARIOS` vizdoom ships)."""
    try:
        import vizdoom
    except ImportError:
        return list(KNOWN_SCENARIOS)
    return [s for s in KNOWN_SCENARIOS if os.path.exists(os.path.join(vizdoom.scenarios_path, f"{s}.cfg"))]


def parse_resolution(value, arg: str = "resolution") -> tuple[int, int]:
    """``"64x48"``, ``(64, 48)`` or ``[64, 48]`` -> ``(width, height)``; both must be >= 16."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
        if not m:
            raise ValueError(f"`{arg}` must look like WIDTHxHEIGHT (e.g. '64x48'), got {value!r}.")
        w, h = int(m.group(1)), int(m.group(2))
    else:
        try:
            w, h = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"`{arg}` must be 'WxH' or a (width, height) pair, got {value!r}.") from None
    if w < 16 or h < 16 or w > 1920 or h > 1200:
        raise ValueError(f"`{arg}` must be between 16x16 and 1920x1200, got {w}x{h}.")
    return w, h


@dataclass
class DoomEnvConfig:
    """What to play and how to record it.

    Args:
        scenario: a vizdoom scenario name (see :func:`available_scenarios`), e.g. ``"my_way_home"`` or
            ``"freedoom2"`` for the full game.
        map: map of a full-game scenario (``"MAP01"`` for freedoom2, ``"E1M1"`` for freedoom1); ``None`` keeps the
            scenario's own map.
        resolution: output ``(width, height)``. The engine renders at the smallest native resolution that covers
            it and frames are resized (area filter) to exactly this size.
        frame_skip: engine tics per recorded frame. 4 tics = 8.75 recorded frames/s of game time at Doom's 35 Hz,
            the usual ViZDoom/GameNGen choice; 1 records every tic.
        buttons: button names, in the order of the recorded multi-hot action vector.
        hud: render the status bar. Off by default: the HUD is not part of the world a simulator should learn.
        max_steps: recorded frames per episode at most (the scenario's own timeout may end it earlier).
    """

    scenario: str = "my_way_home"
    map: str | None = None
    resolution: tuple[int, int] = (160, 120)
    frame_skip: int = 4
    buttons: tuple[str, ...] = DOOM_BUTTONS
    hud: bool = False
    max_steps: int = 1000

    def __post_init__(self):
        valid = available_scenarios()
        if self.scenario not in valid:
            raise ValueError(f"Unknown scenario {self.scenario!r}. Valid scenarios: {', '.join(valid)}.")
        if self.map is not None:
            maps = MAPS_BY_SCENARIO.get(self.scenario)
            if maps is None:
                raise ValueError(
                    f"`map` is only allowed with the full-game scenarios {sorted(MAPS_BY_SCENARIO)}; scenario"
                    f" {self.scenario!r} has a fixed map. Use e.g. --scenario freedoom2 --map MAP01."
                )
            self.map = self.map.upper()
            if self.map not in maps:
                raise ValueError(f"Unknown map {self.map!r} for {self.scenario}. Valid maps: {', '.join(maps)}.")
        self.resolution = parse_resolution(self.resolution)
        if int(self.frame_skip) < 1:
            raise ValueError(f"`frame_skip` must be >= 1, got {self.frame_skip}.")
        if int(self.max_steps) < 1:
            raise ValueError(f"`max_steps` must be >= 1, got {self.max_steps}.")
        self.buttons = tuple(self.buttons)
        if len(self.buttons) == 0:
            raise ValueError("`buttons` is empty; give at least one vizdoom Button name.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        d["buttons"] = list(self.buttons)
        return d


@dataclass
class DoomFrame:
    """One recorded frame. ``action`` is the multi-hot action that led to this frame (zeros for the first)."""

    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] uint8, engine depth units (0 = touching the camera)
    labels: list[dict]  # [{"name", "value", "x", "y", "w", "h", "position"}], boxes in output pixels
    state: dict  # x, y, z, angle, health, armor, alive, kills, items, ammo
    events: list[str]  # engine events since the previous frame
    action: np.ndarray  # [num_buttons] float32 multi-hot
    tic: int


def _native_resolution(width: int, height: int):
    """The smallest vizdoom ScreenResolution at least as large as (width, height), preferring the same aspect."""
    import vizdoom as vzd

    options = []
    for name in dir(vzd.ScreenResolution):
        m = re.fullmatch(r"RES_(\d+)X(\d+)", name)
        if m:
            w, h = int(m.group(1)), int(m.group(2))
            if w >= width and h >= height:
                aspect_err = abs(w / h - width / height)
                options.append((round(aspect_err, 2), w * h, name))
    if not options:
        return vzd.ScreenResolution.RES_1920X1080
    return getattr(vzd.ScreenResolution, min(options)[2])


class DoomEnv:
    """A ViZDoom game recording RGB, depth, labels, player state and events. See the module docstring."""

    def __init__(self, config: DoomEnvConfig):
        import vizdoom as vzd

        self.config = config
        game = vzd.DoomGame()
        game.load_config(os.path.join(vzd.scenarios_path, f"{config.scenario}.cfg"))
        game.set_window_visible(False)
        game.set_mode(vzd.Mode.PLAYER)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_screen_resolution(_native_resolution(*config.resolution))
        game.set_render_hud(config.hud)
        game.set_depth_buffer_enabled(True)
        game.set_labels_buffer_enabled(True)
        game.set_sectors_info_enabled(True)  # sector heights -> door events and the layout caption
        game.set_automap_buffer_enabled(False)
        game.set_audio_buffer_enabled(False)
        game.set_render_messages(False)
        unknown = [b for b in config.buttons if not hasattr(vzd.Button, b)]
        if unknown:
            raise ValueError(f"`buttons`: unknown vizdoom buttons {unknown}.")
        game.set_available_buttons([getattr(vzd.Button, b) for b in config.buttons])
        game.set_available_game_variables([getattr(vzd.GameVariable, v) for v in _STATE_VARIABLES])
        if config.map is not None:
            game.set_doom_map(config.map)
        game.init()
        self.game = game
        self._prev_state: dict | None = None
        self._prev_ceilings: np.ndarray | None = None
        self._steps = 0
        self.layout: dict = {}

    # ------------------------------------------------------------------ engine -> frame
    def _read(self, action: np.ndarray) -> DoomFrame | None:
        s = self.game.get_state()
        if s is None:
            return None
        w, h = self.config.resolution
        rgb, depth = s.screen_buffer, s.depth_buffer
        src_h, src_w = rgb.shape[:2]
        if (src_w, src_h) != (w, h):
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BOX))
            depth = np.asarray(Image.fromarray(depth).resize((w, h), Image.BOX))
        sx, sy = w / src_w, h / src_h
        labels = []
        for lab in s.labels:
            if lab.object_name in _IGNORED_LABELS:
                continue
            box = {"x": int(lab.x * sx), "y": int(lab.y * sy)}
            box["w"], box["h"] = max(1, int(round(lab.width * sx))), max(1, int(round(lab.height * sy)))
            centre = (box["x"] + box["w"] / 2) / w
            position = "left" if centre < 1 / 3 else "right" if centre > 2 / 3 else "center"
            labels.append({"name": lab.object_name, "value": int(lab.value), **box, "position": position})
        v = dict(zip(_STATE_VARIABLES, (float(x) for x in s.game_variables)))
        state = {
            "x": v["POSITION_X"],
            "y": v["POSITION_Y"],
            "z": v["POSITION_Z"],
            "angle": v["ANGLE"],
            "health": v["HEALTH"],
            "armor": v["ARMOR"],
            "alive": bool(v["DEAD"] < 0.5 and v["HEALTH"] > 0),
            "kills": int(v["KILLCOUNT"]),
            "items": int(v["ITEMCOUNT"]),
            "ammo": int(v["SELECTED_WEAPON_AMMO"]),
        }
        ceilings = np.array([sec.ceiling_height for sec in s.sectors], dtype=np.float32)
        if not self.layout:
            self.layout = _layout_summary(s.sectors)
        events = _events(self._prev_state, state, self._prev_ceilings, ceilings)
        self._prev_state, self._prev_ceilings = state, ceilings
        return DoomFrame(
            rgb=np.ascontiguousarray(rgb),
            depth=np.ascontiguousarray(depth),
            labels=labels,
            state=state,
            events=events,
            action=action.astype(np.float32),
            tic=int(s.tic),
        )

    def reset(self, seed: int) -> DoomFrame:
        """Start a new episode; the same seed gives the same episode for the same actions."""
        self.game.set_seed(int(seed) % (2**31))
        self.game.new_episode()
        self._prev_state, self._prev_ceilings, self._steps = None, None, 0
        self.layout = {}
        return self._read(np.zeros(len(self.config.buttons), dtype=np.float32))

    def step(self, action) -> DoomFrame | None:
        """Hold ``action`` (multi-hot over ``config.buttons``) for ``frame_skip`` tics; ``None`` when the episode ended."""
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape[0] != len(self.config.buttons):
            raise ValueError(f"`action` must have {len(self.config.buttons)} entries, got {action.shape[0]}.")
        self.game.make_action([int(a > 0.5) for a in action], int(self.config.frame_skip))
        self._steps += 1
        if self.game.is_episode_finished() or self._steps >= self.config.max_steps:
            return None
        return self._read(action)

    @property
    def last_reward(self) -> float:
        return float(self.game.get_last_reward())

    @property
    def total_reward(self) -> float:
        return float(self.game.get_total_reward())

    def close(self):
        self.game.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _layout_summary(sectors) -> dict:
    """Map-level facts for the global caption: size, number of sectors, height variety."""
    xs, ys, floors = [], [], []
    for sec in sectors:
        floors.append(sec.floor_height)
        for line in sec.lines:
            xs += [line.x1, line.x2]
            ys += [line.y1, line.y2]
    if not xs:
        return {"num_sectors": len(sectors)}
    return {
        "num_sectors": len(sectors),
        "width": float(max(xs) - min(xs)),
        "height": float(max(ys) - min(ys)),
        "floor_levels": len({round(f / 8) for f in floors}),  # 8 map units ~ one stair step
        "bounds": [float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))],
    }


def _events(prev: dict | None, cur: dict, prev_ceil: np.ndarray | None, ceil: np.ndarray) -> list[str]:
    """Engine events between two consecutive player states, from state deltas."""
    if prev is None:
        return []
    events = []
    if cur["health"] < prev["health"]:
        events.append("damage")
    if cur["items"] > prev["items"] or cur["health"] > prev["health"] or cur["armor"] > prev["armor"]:
        events.append("pickup")
    if cur["ammo"] > prev["ammo"]:
        events.append("pickup")
    if cur["kills"] > prev["kills"]:
        events.append("kill")
    if prev["alive"] and not cur["alive"]:
        events.append("death")
    if prev_ceil is not None and prev_ceil.shape == ceil.shape and np.any(np.abs(ceil - prev_ceil) > 0.5):
        events.append("door")  # a sector ceiling moved: doors (and lifts) in Doom are moving ceilings
    return sorted(set(events))
