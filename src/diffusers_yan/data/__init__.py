"""Gameplay data engine: play Doom with agents, filter, balance and caption the frames into HF datasets.

Nothing here imports the game engine until a game is started, so the loader works without ``vizdoom``.
Names are imported lazily (as in :mod:`diffusers_yan`), e.g.:

```py
>>> from diffusers_yan.data import GameplayClipDataset, collect, CollectConfig, DoomEnvConfig
```
"""

import importlib
from typing import TYPE_CHECKING


# public name -> module (relative to this package)
_import_structure = {
    "loader": ["GameplayClipDataset", "GameplayClipIterableDataset", "read_dataset_info"],
    "collector": ["CollectConfig", "collect", "collect_episode", "finalize", "episode_seeds", "dataset_features"],
    "env": ["DoomEnv", "DoomEnvConfig", "DoomFrame", "available_scenarios", "parse_resolution", "KNOWN_SCENARIOS"],
    "agents": ["AGENTS", "RandomAgent", "ExploreAgent", "PPOAgent", "DoomGymEnv", "make_agent", "PPO_ACTIONS"],
    "filters": [
        "FILTER_REASONS",
        "FilterConfig",
        "filter_episode",
        "is_death_frame",
        "is_lag_frame",
        "is_transition_frame",
        "is_wall_frame",
        "segments_from_mask",
    ],
    "balance": [
        "balance_dataset",
        "balanced_cluster_counts",
        "coverage_entropy",
        "sample_from_clusters",
        "transition_features",
    ],
    "captions": ["VLMCaptioner", "global_caption", "local_caption", "dominant_colours"],
}
_name_to_module = {name: mod for mod, names in _import_structure.items() for name in names}
__all__ = sorted(_name_to_module)


def __getattr__(name):
    if name in _name_to_module:
        value = getattr(importlib.import_module(f".{_name_to_module[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover
    from .balance import balance_dataset, balanced_cluster_counts, coverage_entropy  # noqa: F401
    from .collector import CollectConfig, collect  # noqa: F401
    from .env import DoomEnv, DoomEnvConfig  # noqa: F401
    from .loader import GameplayClipDataset, GameplayClipIterableDataset  # noqa: F401
