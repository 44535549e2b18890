"""Gameplay data engine: play Doom with agents, filter, balance and caption the frames into HF datasets.

Nothing here imports the game engine until a game is started, so the loader works without ``vizdoom``.
Names are imported lazily (as in :mod:`diffusers_yan`), e.g.:

```py
>>> from diffusers_yan.data import GameplayClipDataset, collect, CollectConfig, DoomEnvConfig
```
"""

import sys
from typing import TYPE_CHECKING

from diffusers.utils import _LazyModule


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
if TYPE_CHECKING:  # pragma: no cover
    from .balance import balance_dataset, balanced_cluster_counts, coverage_entropy  # noqa: F401
    from .collector import CollectConfig, collect  # noqa: F401
    from .env import DoomEnv, DoomEnvConfig  # noqa: F401
    from .loader import GameplayClipDataset, GameplayClipIterableDataset  # noqa: F401
else:
    # diffusers' own lazy module: names resolve (and their modules import) on first access
    sys.modules[__name__] = _LazyModule(__name__, globals()["__file__"], _import_structure, module_spec=__spec__)
