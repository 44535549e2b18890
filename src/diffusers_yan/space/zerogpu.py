"""ZeroGPU support for the Space's request/response clip mode.

On ZeroGPU hardware (Hugging Face Spaces on shared GPUs), the Space's process holds no GPU: the ``spaces`` package
lends one for the length of each call to a function decorated with ``spaces.GPU``. What that requires, as read in
``spaces`` 0.30 to 0.51 (``spaces/config.py``, ``spaces/zero/decorator.py``, ``spaces/zero/wrappers.py``):

- The hardware is marked by ``SPACES_ZERO_GPU=true`` in the environment; elsewhere ``spaces.GPU`` returns the
  function unchanged, so the same code runs on a laptop, a CPU Space or a GPU Space.
- ``spaces`` is imported before anything initialises CUDA, and needs a CUDA build of torch. It then emulates CUDA
  in the Space's process: ``pipe.to("cuda")`` at start-up, in the main thread, is how weights are placed; they are
  copied to the lent GPU when a call starts.
- The decorated function runs in a forked worker process: its arguments and its return value are pickled. It must
  be a plain function (``spaces`` refuses ``async def``) and exist before ``gradio.Blocks.launch()``: ``spaces``
  hooks ``launch()`` to pack the weights placed on ``cuda`` and report the Space's GPU functions to ZeroGPU (a
  FastAPI app served by uvicorn never runs that hook).
- A call blocks until the GPU work is done, and the visitor's GPU quota comes from the Gradio request in a context
  variable. So it is made from a synchronous Gradio event handler, which Gradio runs in a worker thread with the
  request's context: never on the event loop, and not through a thread pool that drops the context.
- ``duration`` (seconds, or a function of the call's arguments) is the longest the call may hold the GPU; the
  default is 60 s, and shorter requests are scheduled sooner.
- The worker is forked from the Space's process, so it must not need what a fork does not carry over: threads
  (a thread pool's workers) and the event loop's futures (a play-slot queue) stay behind in the parent.

:class:`ZeroGPUClipRunner` does all this: the request is checked by :meth:`SessionManager.prepare_clip` in the
Space's process, then :meth:`SessionManager.render_clip` (synchronous: no thread pool, slot queue or event loop)
runs in the GPU worker on the picklable :class:`ClipRequest`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

from .sessions import ClipRequest, SessionManager


ZEROGPU_ENV = "SPACES_ZERO_GPU"

# GPU time requested per clip: `base + per action * number of actions`.
# The base covers ZeroGPU's start of a call (forking the worker, CUDA initialisation, copying the weights to the
# GPU) and the mp4 export.
DEFAULT_BASE_SECONDS = 20.0
# The bundled Yan-Sim model takes 28 ms per action on one CPU core (benchmarks/results/space_sessions.md), so this
# leaves a wide margin on a GPU slice; the longest clip (`SpaceConfig.max_clip_actions`, 240) then asks for 44 s,
# under ZeroGPU's default of 60 s. Bigger models (YAN_MODEL) may need more: `YAN_GPU_SECONDS_PER_ACTION`.
DEFAULT_SECONDS_PER_ACTION = 0.1


def is_zerogpu_space() -> bool:
    """Whether this process runs on ZeroGPU hardware, read from the environment as ``spaces.config`` reads it."""
    return os.environ.get(ZEROGPU_ENV, "").lower() in ("1", "t", "true")


class ZeroGPUClipRunner:
    """Plays clip-mode requests inside a ``spaces.GPU`` function: :meth:`SessionManager.render_clip`, decorated.

    Create it before the app is launched and call it from a synchronous Gradio event handler (see the module
    docstring). Input errors are raised as :class:`SpaceError` by :meth:`SessionManager.prepare_clip`, before any
    GPU is requested; an error on the GPU worker comes back as ``spaces``' own ``gradio.Error`` ("ZeroGPU worker
    error", naming the exception type: ``spaces`` forwards the message of ``gradio.Error`` alone).

    Args:
        manager: the Space's session manager; its pipelines were moved to ``"cuda"`` at start-up.
        base_seconds: GPU time asked for every clip (see ``DEFAULT_BASE_SECONDS``).
        seconds_per_action: GPU time asked for per action of the clip.
    """

    def __init__(
        self,
        manager: SessionManager,
        base_seconds: float = DEFAULT_BASE_SECONDS,
        seconds_per_action: float = DEFAULT_SECONDS_PER_ACTION,
    ):
        try:
            import spaces
        except ImportError:
            raise ImportError(
                f"ZeroGPU hardware ({ZEROGPU_ENV}=true) needs the `spaces` package: `pip install spaces`"
                " (Hugging Face installs it on every Gradio Space)."
            ) from None
        if base_seconds <= 0 or seconds_per_action < 0:
            raise ValueError(
                f"`base_seconds` must be > 0 and `seconds_per_action` >= 0, got {base_seconds!r} and"
                f" {seconds_per_action!r}."
            )
        self.manager = manager
        self.base_seconds = base_seconds
        self.seconds_per_action = seconds_per_action
        # decorated once, here: ZeroGPU's start-up hook (at launch) registers the functions decorated by then
        self.render_on_gpu: Callable[[ClipRequest], str] = spaces.GPU(manager.render_clip, duration=self.duration)

    def __call__(self, actions: Any, **options) -> str:
        """Check the request, then render it on a lent GPU; returns the clip's mp4 path. ``options`` are those of
        :meth:`SessionManager.prepare_clip` (``model``, ``start_index``, ``upload``, ``seed``, ``prompt``, ...)."""
        return self.render_on_gpu(self.manager.prepare_clip(actions, **options))

    def duration(self, request: ClipRequest) -> int:
        """Seconds of GPU time to ask for ``request`` (``spaces.GPU`` calls it with the call's argument)."""
        return math.ceil(self.base_seconds + self.seconds_per_action * request.num_actions)
