"""Evaluation of world models against the game engine: frame metrics, horizons, and the inverse-dynamics probe.

Names are imported lazily (as in :mod:`diffusers_yan`), e.g.:

```py
>>> from diffusers_yan.evaluation import evaluate_windows, load_eval_windows, YanInverseDynamicsModel
```

The command line is ``yan evaluate`` (:mod:`diffusers_yan.evaluation.cli`).
"""

import importlib
from typing import TYPE_CHECKING


# public name -> module (relative to this package)
_import_structure = {
    "metrics": [
        "PSNR_CAP_DB",
        "copy_last_frames",
        "frame_psnr",
        "frame_ssim",
        "frechet_distance",
        "load_fvd_detector",
        "load_lpips",
        "summarize",
    ],
    "evaluate": [
        "EvalWindow",
        "check_action_spaces",
        "evaluate_windows",
        "load_eval_windows",
        "parse_horizons",
        "select_starts",
        "step_actions",
        "step_frames",
        "teacher_forced_starts",
        "window_length",
    ],
    "inverse_dynamics": ["YanInverseDynamicsModel", "button_labels", "idm_accuracy", "majority_accuracy"],
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
    from .evaluate import EvalWindow, evaluate_windows, load_eval_windows  # noqa: F401
    from .inverse_dynamics import YanInverseDynamicsModel  # noqa: F401
    from .metrics import frame_psnr, frame_ssim  # noqa: F401
