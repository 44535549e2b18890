"""The clip mode on ZeroGPU hardware: clips play inside a ``spaces.GPU`` function; elsewhere on the plain path.

ZeroGPU itself cannot run here (it needs Hugging Face's device API and a CUDA build of torch), so a stand-in
``spaces`` module does what the real decorator does to a call: it asks for ``duration`` seconds (evaluated on the
call's arguments), refuses ``async`` functions, and sends the arguments and the result across a process boundary
(pickled). Everything else is the real path: the Gradio Blocks event, ``SessionManager.play_clip``, a tiny pipeline.
"""

import asyncio
import functools
import inspect
import math
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest


pytest.importorskip("gradio", reason="the Space needs the [space] extra (gradio)")

from diffusers_yan.space.clip import CLIP_API_NAME, build_clip_blocks  # noqa: E402
from diffusers_yan.space.zerogpu import (  # noqa: E402
    DEFAULT_BASE_SECONDS,
    DEFAULT_SECONDS_PER_ACTION,
    ZeroGPUClipRunner,
    is_zerogpu_space,
)

from .test_space_sessions import _has_pyav, manager_for, model_dir, pipe  # noqa: E402, F401  (module fixtures)


class FakeSpaces(types.ModuleType):
    """A stand-in for the `spaces` package on ZeroGPU hardware that records what is decorated and called."""

    def __init__(self):
        super().__init__("spaces")
        self.decorated, self.calls = [], []

    def GPU(self, task=None, *, duration=None, size=None):  # the signature of `spaces.GPU`
        if task is None:
            return functools.partial(self.GPU, duration=duration, size=size)
        if inspect.iscoroutinefunction(task):
            raise NotImplementedError  # as `spaces` does
        self.decorated.append(task)

        @functools.wraps(task)
        def gradio_handler(*args, **kwargs):
            try:
                asyncio.get_running_loop()
                on_event_loop = True
            except RuntimeError:
                on_event_loop = False
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            self.calls.append({"duration": seconds, "on_event_loop": on_event_loop, "kwargs": kwargs})
            # the GPU worker is another process: arguments and result are pickled on the way
            args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
            return pickle.loads(pickle.dumps(task(*args, **kwargs)))

        return gradio_handler


def read_frames(path):
    import imageio.v3 as iio

    return iio.imread(path, plugin="pyav") if _has_pyav() else iio.imread(path)


def video_path(output):
    """The file path in a `gr.Video` output, as returned by calling the Blocks."""
    path = output["video"] if isinstance(output, dict) else output
    path = path["path"] if isinstance(path, dict) else path
    assert isinstance(path, str) and path.endswith(".mp4"), output
    return path


@pytest.fixture
def fake_spaces(monkeypatch):
    spaces = FakeSpaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    return spaces


def test_zerogpu_is_read_from_the_environment_as_spaces_reads_it(monkeypatch):
    for value, expected in [("true", True), ("1", True), ("True", True), ("false", False), ("", False)]:
        monkeypatch.setenv("SPACES_ZERO_GPU", value)
        assert is_zerogpu_space() is expected
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert not is_zerogpu_space()


def test_clip_mode_on_zerogpu_plays_inside_spaces_gpu(pipe, fake_spaces):  # noqa: F811
    import gradio as gr

    manager = manager_for(pipe)
    blocks = build_clip_blocks(manager)  # ZeroGPU, from the environment
    # decorated once, when the app is built (before launch, where ZeroGPU registers its GPU functions)
    assert len(fake_spaces.decorated) == 1 and not fake_spaces.calls
    (event,) = [fn for fn in blocks.fns.values() if fn.api_name == CLIP_API_NAME]
    assert not inspect.iscoroutinefunction(event.fn)  # `spaces.GPU` blocks: Gradio must run it in a worker thread
    assert event.concurrency_limit == manager.config.max_sessions

    # through Gradio's own event processing, as a visitor's click
    actions = "MOVE_FORWARD*3,TURN_LEFT"
    output = blocks("tiny-sim", "start frame 2", None, actions, 1, api_name=CLIP_API_NAME)
    (call,) = fake_spaces.calls
    assert call["on_event_loop"] is False
    assert call["kwargs"] == {"model": "tiny-sim", "start_index": 1, "upload": None, "seed": 1}
    assert call["duration"] == math.ceil(DEFAULT_BASE_SECONDS + 4 * DEFAULT_SECONDS_PER_ACTION)
    frames = read_frames(video_path(output))
    assert frames.shape[0] == 4 * pipe.frames_per_action and frames.shape[-1] == 3

    # the same clip on the plain path (thread pool, no `spaces`): the same video
    plain = asyncio.run(manager.play_clip(actions, start_index=1, seed=1))
    assert np.abs(read_frames(plain).astype(float) - frames.astype(float)).mean() < 2.0

    # bad input is refused with its message before any GPU is asked for
    with pytest.raises(gr.Error, match="unknown action"):
        blocks("tiny-sim", "start frame 1", None, "JUMP*3", 0, api_name=CLIP_API_NAME)
    with pytest.raises(gr.Error, match="At most"):
        blocks("tiny-sim", "start frame 1", None, "NOOP*1000", 0, api_name=CLIP_API_NAME)
    assert len(fake_spaces.calls) == 1
    asyncio.run(manager.shutdown())


def test_errors_found_on_the_gpu_worker_come_back_as_gradio_errors(pipe, fake_spaces):  # noqa: F811
    import gradio as gr

    manager = manager_for(pipe)
    runner = ZeroGPUClipRunner(manager)
    # passes the checks made before asking for a GPU; the start frame is checked by `play_clip`, on the GPU worker
    with pytest.raises(gr.Error, match="Start frame 7 does not exist"):
        runner("MOVE_FORWARD", model="tiny-sim", start_index=7)
    assert len(fake_spaces.calls) == 1
    with pytest.raises(ValueError, match="`base_seconds` must be > 0"):
        ZeroGPUClipRunner(manager, base_seconds=0)
    asyncio.run(manager.shutdown())


def test_without_spaces_the_clip_mode_takes_the_plain_path(pipe, monkeypatch):  # noqa: F811
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    manager = manager_for(pipe)
    blocks = build_clip_blocks(manager)
    (event,) = [fn for fn in blocks.fns.values() if fn.api_name == CLIP_API_NAME]
    assert inspect.iscoroutinefunction(event.fn)  # `play_clip` on the manager's thread pool and play slots
    output = blocks("tiny-sim", "start frame 1", None, "MOVE_FORWARD*2", 0, api_name=CLIP_API_NAME)
    path = video_path(output)
    assert read_frames(path).shape[0] == 2 * pipe.frames_per_action
    asyncio.run(manager.shutdown())

    # ZeroGPU hardware without `spaces` is a broken set-up: said at start-up, not at the first click
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with pytest.raises(ImportError, match="needs the `spaces` package"):
        build_clip_blocks(manager_for(pipe))


def test_real_spaces_decorator_outside_zerogpu(pipe, monkeypatch):  # noqa: F811
    spaces = pytest.importorskip("spaces", reason="`spaces` comes with the [space] extra")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    manager = manager_for(pipe)
    runner = ZeroGPUClipRunner(manager)
    assert runner.play_on_gpu == runner._play  # `spaces.GPU` is a no-op off ZeroGPU
    assert spaces.GPU(runner._play, duration=runner.duration) == runner._play
    assert runner.duration("MOVE_FORWARD*10") == math.ceil(DEFAULT_BASE_SECONDS + 10 * DEFAULT_SECONDS_PER_ACTION)
    path = runner("MOVE_FORWARD*2", model="tiny-sim", seed=3)
    assert os.path.dirname(path) == manager.clip_dir and read_frames(path).shape[0] == 2 * pipe.frames_per_action
    asyncio.run(manager.shutdown())


def test_space_app_on_zerogpu_serves_the_clip_mode_alone(model_dir, fake_spaces, monkeypatch):  # noqa: F811
    import runpy

    import gradio as gr
    import torch

    app_py = str(Path(__file__).resolve().parent.parent / "spaces_app" / "app.py")
    monkeypatch.setenv("YAN_MODEL", model_dir)
    # a ZeroGPU Space built for CPU hardware (CPU-only torch) is refused with what to do
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(RuntimeError, match="--hardware gpu"):
        runpy.run_path(app_py, run_name="space_app")
    assert not fake_spaces.decorated

    monkeypatch.setattr(torch.version, "cuda", "12.8")  # as on ZeroGPU hardware
    monkeypatch.setenv("YAN_GPU_SECONDS_PER_ACTION", "0.5")
    namespace = runpy.run_path(app_py, run_name="space_app")  # module level only: it serves under __main__
    app = namespace["app"]
    assert isinstance(app, gr.Blocks) and len(fake_spaces.decorated) == 1  # the clip mode alone, GPU function ready
    output = app("tiny-sim", "start frame 1", None, "MOVE_FORWARD*2", 0, api_name=CLIP_API_NAME)
    assert read_frames(video_path(output)).shape[0] == 2 * namespace["manager"].pipelines["tiny-sim"].frames_per_action
    assert fake_spaces.calls[0]["duration"] == math.ceil(DEFAULT_BASE_SECONDS + 2 * 0.5)
    asyncio.run(namespace["manager"].shutdown())
