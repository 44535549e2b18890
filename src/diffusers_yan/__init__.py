"""diffusers-yan: interactive video generation (Yan-Sim, Yan-Gen, Yan-Edit) as diffusers pipelines.

Everything public is importable flat from here, e.g. ``from diffusers_yan import YanSimPipeline``. Imports are
lazy (as in diffusers), so ``import diffusers_yan`` stays fast and optional dependencies (the game engine, the
Space) are only imported when their names are used.
"""

import importlib
from typing import TYPE_CHECKING


__version__ = "0.1.0.dev0"

# public name -> module (relative to this package) that defines it
_import_structure = {
    "actions": ["ActionSpace", "DOOM_BUTTONS", "DOOM_KEY_BINDINGS"],
    "models.embeddings": ["YanActionEncoder"],
    "models.autoencoders.autoencoder_kl_yan": ["AutoencoderKLYan", "YanVAEDecoderCache"],
    "models.unets.unet_yan_sim": ["YanSimUNetModel", "YanSimUNetOutput", "YanSimKVCache"],
    "models.transformers.transformer_yan_gen": ["YanGenTransformer3DModel", "YanGenKVCache"],
    "pipelines.yan_sim.pipeline_output": ["YanSimPipelineOutput", "YanSimState"],
    "pipelines.yan_sim.pipeline_yan_sim": ["YanSimPipeline"],
    "pipelines.yan_sim.env_yan_sim": ["YanSimEnv"],
    "pipelines.yan_gen.pipeline_output": ["YanGenPipelineOutput", "YanGenState"],
    "pipelines.yan_gen.pipeline_yan_gen": ["YanGenPipeline"],
    "pipelines.yan_gen.env_yan_gen": ["YanGenEnv"],
    "bundled": ["BUNDLED_MODELS"],
}
_name_to_module = {name: mod for mod, names in _import_structure.items() for name in names}
__all__ = sorted(_name_to_module)


def __getattr__(name):
    if name in _name_to_module:
        module = importlib.import_module(f".{_name_to_module[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .actions import DOOM_BUTTONS, DOOM_KEY_BINDINGS, ActionSpace  # noqa: F401
    from .models.embeddings import YanActionEncoder  # noqa: F401
