"""Models shipped inside the package, so the main commands work offline on a fresh machine.

``BUNDLED_MODELS`` maps a name to a Hub-ready model folder (``model_index.json``, safetensors weights, a model
card and ``start_frames/``), usable wherever a Hub repo id is:

```py
>>> from diffusers_yan import BUNDLED_MODELS, YanSimPipeline
>>> pipe = YanSimPipeline.from_pretrained(BUNDLED_MODELS["yan-sim-doom"])
```
"""

from pathlib import Path


BUNDLED_MODELS_DIR = Path(__file__).resolve().parent / "assets" / "models"

BUNDLED_MODELS: dict[str, str] = {
    path.name: str(path) for path in sorted(BUNDLED_MODELS_DIR.glob("*")) if (path / "model_index.json").is_file()
}
