"""Evaluation of world models against the game engine: frame metrics, horizons, and the inverse-dynamics probe.

Names are imported lazily (as in :mod:`diffusers_yan`), e.g.:

```py
>>> from diffusers_yan.evaluation import evaluate_windows, load_eval_windows, YanInverseDynamicsModel
```

The command line is ``yan evaluate`` (:mod:`diffusers_yan.evaluation.cli`).
"""

import sys
from typing import TYPE_CHECKING

from diffusers.utils import _LazyModule


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
if TYPE_CHECKING:  # pragma: no cover
    from .evaluate import EvalWindow, evaluate_windows, load_eval_windows  # noqa: F401
    from .inverse_dynamics import YanInverseDynamicsModel  # noqa: F401
    from .metrics import frame_psnr, frame_ssim  # noqa: F401
else:
    # diffusers' own lazy module: names resolve (and their modules import) on first access
    sys.modules[__name__] = _LazyModule(__name__, globals()["__file__"], _import_structure, module_spec=__spec__)
