"""The clip mode on ZeroGPU hardware: clips play inside a ``spaces.GPU`` function; elsewhere on the plain path.

ZeroGPU itself cannot run here (it needs Hugging Face's device API and a CUDA build of torch), so a stand-in
``spaces`` module does what the real decorator does to a call: it asks for ``duration`` seconds (evaluated on the
call's arguments), refuses ``async`` functions, and runs the function in a forked worker process (in a thread of
its own there, as ``spaces`` does), sending the arguments and the result across the process boundary pickled; an
exception other than ``gradio.Error`` comes back as ``spaces``' generic ``gradio.Error``. Everything else is the
real path: the Gradio Blocks event, ``SessionManager.prepare_clip`` / ``render_clip``, a tiny pipeline.
"""

import asyncio
import functools
import inspect
import math
import multiprocessing
import os
import pickle
import sys
import threading
import types
from pathlib import Path

import numpy as np
import PIL.Image
import pytest


pytest.importorskip("gradio", reason="the Space needs the [space] extra (gradio)")

from diffusers_yan.space import SpaceError  # noqa: E402
from diffusers_yan.space.clip import CLIP_API_NAME, build_clip_blocks  # noqa: E402
from diffusers_yan.space.sessions import ClipRequest  # noqa: E402
from diffusers_yan.space.zerogpu import (  # noqa: E402
    DEFAULT_BASE_SECONDS,
    DEFAULT_SECONDS_PER_ACTION,
    ZeroGPUClipRunner,
    is_zerogpu_space,
)

from .test_space_gen import gen_model_dir  # noqa: E402, F401  (module fixture)
from .test_space_sessions import _has_pyav, manager_for, model_dir, pipe, png_bytes  # noqa: E402, F401


# a GPU worker that has not answered by then is hung (e.g. waiting for what the fork left behind in the parent)
WORKER_TIMEOUT = 120
APP_PY = Path(__file__).resolve().parent.parent / "spaces_app" / "app.py"


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
            self.calls.append({"duration": seconds, "on_event_loop": on_event_loop, "args": args, "kwargs": kwargs})
            return run_in_forked_worker(task, pickle.dumps((args, kwargs)))

        return gradio_handler


def run_in_forked_worker(task, payload: bytes):
    """`task(*args, **kwargs)` in a forked process, in a thread there, as `spaces.zero.wrappers` runs it."""
    import gradio as gr

    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def work():
        try:
            args, kwargs = pickle.loads(payload)
            result = ("ok", task(*args, **kwargs))
        except Exception as e:  # `spaces` forwards a gradio.Error; of any other exception, only its type's name
            result = ("error", e if isinstance(e, gr.Error) else type(e).__name__)
        sender.send_bytes(pickle.dumps(result))

    def worker():
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    process = context.Process(target=worker, daemon=True)
    process.start()
    try:
        if not receiver.poll(WORKER_TIMEOUT):
            raise AssertionError(f"the GPU worker gave no result in {WORKER_TIMEOUT} s: it hangs")
        status, value = pickle.loads(receiver.recv_bytes())
    finally:
        process.kill()
        process.join()
    if status == "ok":
        return value
    if isinstance(value, gr.Error):
        raise value
    raise gr.Error(value, title="ZeroGPU worker error")


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

    manager = manager_for(pipe, max_sessions=1)
    blocks = build_clip_blocks(manager)  # ZeroGPU, from the environment
    # decorated once, when the app is built (before launch, where ZeroGPU registers its GPU functions): the
    # manager's synchronous renderer itself
    assert fake_spaces.decorated == [manager.render_clip] and not fake_spaces.calls
    (event,) = [fn for fn in blocks.fns.values() if fn.api_name == CLIP_API_NAME]
    assert not inspect.iscoroutinefunction(event.fn)  # `spaces.GPU` blocks: Gradio must run it in a worker thread
    assert event.concurrency_limit == manager.config.max_sessions

    # the same clip on the plain path first (thread pool, play slot): it leaves the pool's threads running
    actions = "MOVE_FORWARD*3,TURN_LEFT"
    plain = asyncio.run(manager.play_clip(actions, start_index=1, seed=1))
    # a live world holds the only play slot while the worker is forked: the GPU worker must not wait for it
    asyncio.run(manager.slots.acquire("a-live-world"))

    # through Gradio's own event processing, as a visitor's click
    output = blocks("tiny-sim", "start frame 2", None, actions, 1, "", api_name=CLIP_API_NAME)
    (call,) = fake_spaces.calls
    assert call["on_event_loop"] is False and not call["kwargs"]
    (request,) = call["args"]  # checked in the Space's process, rendered in the worker
    assert isinstance(request, ClipRequest) and request.num_actions == 4
    assert (request.model, request.seed, request.prompt, request.fps) == ("tiny-sim", 1, None, 15)
    with PIL.Image.open(manager.start_frame_path("tiny-sim", 1)) as start:
        assert np.array_equal(np.asarray(request.image), np.asarray(start.convert("RGB")))
    assert call["duration"] == math.ceil(DEFAULT_BASE_SECONDS + 4 * DEFAULT_SECONDS_PER_ACTION)
    path = video_path(output)
    frames = read_frames(path)
    assert frames.shape[0] == 4 * pipe.frames_per_action and frames.shape[-1] == 3
    assert manager.slots.holders == {"a-live-world"}  # the worker took no slot (and could not give one back)
    np.testing.assert_array_equal(read_frames(plain), frames)  # the same video as on the plain path

    # bad input is refused with its message before any GPU is asked for
    with pytest.raises(gr.Error, match="unknown action"):
        blocks("tiny-sim", "start frame 1", None, "JUMP*3", 0, "", api_name=CLIP_API_NAME)
    with pytest.raises(gr.Error, match="At most"):
        blocks("tiny-sim", "start frame 1", None, "NOOP*1000", 0, "", api_name=CLIP_API_NAME)
    assert len(fake_spaces.calls) == 1
    asyncio.run(manager.shutdown())


def test_request_errors_before_the_gpu_and_worker_errors_after(pipe, fake_spaces):  # noqa: F811
    import gradio as gr

    manager = manager_for(pipe)
    runner = ZeroGPUClipRunner(manager)
    # every check of the request runs in the Space's process, before a GPU is asked for
    for options, match in [
        ({"start_index": 7}, "Start frame 7 does not exist"),
        ({"upload": png_bytes(PIL.Image.new("RGB", (10_000, 5_000)))}, "at most 40 megapixels"),
        ({"prompt": "a cave"}, "Yan-Sim model: it takes no prompt"),
        ({"seed": -1}, "`seed` must be an integer"),
        ({"fps": 0}, "`fps` must be a positive integer"),
        ({"model": "tiny-gen"}, "Unknown model 'tiny-gen'"),
    ]:
        with pytest.raises(SpaceError, match=match):
            runner("MOVE_FORWARD", **options)
    assert not fake_spaces.calls

    # an error on the worker comes back as `spaces` sends it (a gradio.Error naming its type), and the clip's
    # empty mp4 is not left behind
    request = manager.prepare_clip("MOVE_FORWARD", seed=0)
    request.image = None  # the pipeline refuses it on the worker: no start image and no state
    with pytest.raises(gr.Error, match="SpaceError"):
        runner.render_on_gpu(request)
    assert len(fake_spaces.calls) == 1 and not os.path.exists(request.path)
    with pytest.raises(SpaceError, match="Pass `image` to start a world"):  # the message, off the worker
        manager.render_clip(request)

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
    output = blocks("tiny-sim", "start frame 1", None, "MOVE_FORWARD*2", 0, "", api_name=CLIP_API_NAME)
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
    assert runner.render_on_gpu == manager.render_clip  # `spaces.GPU` is a no-op off ZeroGPU
    assert spaces.GPU(manager.render_clip, duration=runner.duration) == manager.render_clip
    request = manager.prepare_clip("MOVE_FORWARD*10")
    assert runner.duration(request) == math.ceil(DEFAULT_BASE_SECONDS + 10 * DEFAULT_SECONDS_PER_ACTION)
    os.remove(request.path)
    path = runner("MOVE_FORWARD*2", model="tiny-sim", seed=3)
    assert os.path.dirname(path) == manager.clip_dir and read_frames(path).shape[0] == 2 * pipe.frames_per_action
    asyncio.run(manager.shutdown())


def test_space_app_on_zerogpu_serves_the_clip_mode_alone(model_dir, fake_spaces, monkeypatch):  # noqa: F811
    import runpy

    import gradio as gr
    import torch

    app_py = str(APP_PY)
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
    output = app("tiny-sim", "start frame 1", None, "MOVE_FORWARD*2", 0, "", api_name=CLIP_API_NAME)
    assert read_frames(video_path(output)).shape[0] == 2 * namespace["manager"].pipelines["tiny-sim"].frames_per_action
    assert fake_spaces.calls[0]["duration"] == math.ceil(DEFAULT_BASE_SECONDS + 2 * 0.5)
    asyncio.run(namespace["manager"].shutdown())


def test_space_app_yan_gen_settings_from_variables(gen_model_dir, fake_spaces, monkeypatch):  # noqa: F811
    """YAN_GEN_RESOLUTION and YAN_GEN_GUIDANCE_SCALE reach the Yan-Gen worlds (here in ZeroGPU clips, with a
    prompt); malformed or out-of-range values stop the app with a message naming the variable."""
    import runpy

    import torch

    monkeypatch.setattr(torch.version, "cuda", "12.8")  # as on ZeroGPU hardware
    monkeypatch.setenv("YAN_MODEL", gen_model_dir)
    for name, value, match in [
        ("YAN_GEN_RESOLUTION", "480", "YAN_GEN_RESOLUTION='480' is malformed: expected HEIGHTxWIDTH"),
        ("YAN_GEN_RESOLUTION", "32x48x2", "YAN_GEN_RESOLUTION='32x48x2' is malformed"),
        ("YAN_GEN_GUIDANCE_SCALE", "strong", "YAN_GEN_GUIDANCE_SCALE='strong' is malformed"),
        ("YAN_GEN_GUIDANCE_SCALE", "0.5", r"out of range: `gen_guidance_scale` must be >= 1"),
        ("YAN_GEN_RESOLUTION", "0x48", r"out of range: `gen_resolution` must be two positive ints"),
        ("YAN_MAX_SESSIONS", "two", "YAN_MAX_SESSIONS='two' is malformed"),
    ]:
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ValueError, match=match):
                runpy.run_path(str(APP_PY), run_name="space_app")
    with monkeypatch.context() as env:  # a resolution the model cannot make: refused when the model is loaded
        env.setenv("YAN_GEN_RESOLUTION", "30x48")
        with pytest.raises(ValueError, match="`height` must be a positive multiple of 16"):
            runpy.run_path(str(APP_PY), run_name="space_app")
    assert not fake_spaces.decorated

    monkeypatch.setenv("YAN_GEN_RESOLUTION", " 32X48 ")
    monkeypatch.setenv("YAN_GEN_GUIDANCE_SCALE", "2")
    namespace = runpy.run_path(str(APP_PY), run_name="space_app")
    manager, app = namespace["manager"], namespace["app"]
    assert manager.config.gen_resolution == (32, 48) and manager.config.gen_guidance_scale == 2.0
    env = manager._make_env("tiny-gen")
    assert (env.height, env.width, env.guidance_scale) == (32, 48, 2.0)
    output = app("tiny-gen", "start frame 1", None, "LEFT,JUMP", 0, "a cave", api_name=CLIP_API_NAME)
    (call,) = fake_spaces.calls
    (request,) = call["args"]
    assert (request.model, request.prompt, request.num_actions, request.fps) == ("tiny-gen", "a cave", 2, 16)
    assert read_frames(video_path(output)).shape == (1 + 4, 32, 48, 3)  # reset + one block, at 32x48
    asyncio.run(manager.shutdown())
