"""The Yan Space: play a generated world in the browser with the keyboard, many visitors at once.

```py
>>> from diffusers_yan.space import SpaceConfig, build_app, load_manager
>>> manager = load_manager(["path/to/yan-sim-model", "path/to/yan-gen-model"], SpaceConfig(max_sessions=2))
>>> app = build_app(manager)  # a FastAPI app: serve it with uvicorn (what `yan play` does)
```
"""

from __future__ import annotations

import os

from .server import build_app
from .sessions import SessionManager, SpaceConfig, SpaceError, load_start_image


__all__ = [
    "SessionManager",
    "SpaceConfig",
    "SpaceError",
    "build_app",
    "load_manager",
    "load_start_image",
    "pipeline_class",
    "serve",
]


def load_manager(models: list[str] | None = None, config: SpaceConfig | None = None, device: str = "cpu"):
    """Load each model folder / Hub id once (``None``: the bundled models) into a :class:`SessionManager`.

    The pipeline class comes from the folder's ``model_index.json`` (``_class_name``): ``YanSimPipeline`` or
    ``YanGenPipeline`` (a causal one, with an action branch). The model name shown on the page is the folder's name.
    """
    from ..bundled import BUNDLED_MODELS

    if not models:
        if not BUNDLED_MODELS:
            raise FileNotFoundError("No bundled model is installed; pass a model folder (`yan play --model PATH`).")
        models = list(BUNDLED_MODELS.values())
    pipelines = {}
    for path in models:
        name = os.path.basename(os.path.normpath(path)) or path
        if name in pipelines:
            name = path
        pipelines[name] = pipeline_class(path).from_pretrained(path).to(device)
    return SessionManager(pipelines, config)


def pipeline_class(path: str):
    """The Space's pipeline class for a model folder or Hub id, from its ``model_index.json`` ``_class_name``."""
    from diffusers import DiffusionPipeline

    from ..pipelines.yan_gen.pipeline_yan_gen import YanGenPipeline
    from ..pipelines.yan_sim.pipeline_yan_sim import YanSimPipeline

    classes = {cls.__name__: cls for cls in (YanSimPipeline, YanGenPipeline)}
    class_name = DiffusionPipeline.load_config(path).get("_class_name")
    if class_name not in classes:
        raise ValueError(
            f"{path!r} holds a {class_name} (`_class_name` in its model_index.json); the Space plays"
            f" {' and '.join(classes)} models."
        )
    return classes[class_name]


def serve(app, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Serve ``app`` with uvicorn until interrupted; ``share=True`` also opens a public Gradio share link."""
    import uvicorn
    from diffusers.utils import logging

    logger = logging.get_logger(__name__)
    if share:
        import secrets

        from gradio.networking import setup_tunnel

        try:
            url = setup_tunnel("127.0.0.1" if host == "0.0.0.0" else host, port, secrets.token_urlsafe(32), None, None)
        except Exception as e:  # no internet, or the share server refused
            raise RuntimeError(f"Could not open a share link ({type(e).__name__}: {e}); serve without --share.")
        logger.warning(f"public share link (tunnels this server; anyone with it can play): {url}")
    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=1 << 20)
