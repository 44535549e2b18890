"""Play sessions of the Yan Space: one world per browser tab, many tabs on one shared pipeline.

A model is a Yan-Sim pipeline (:class:`YanSimPipeline`, next-frame simulation driven by keys) or a causal Yan-Gen
one (:class:`YanGenPipeline`, block-by-block generation driven by keys and a prompt that may change mid-play). The
world logic lives in the pipelines and their gym envs (:class:`YanSimEnv`, :class:`YanGenEnv`); this module only
keeps, per visitor:

- an env (the world's immutable state lives there; the pipeline is shared and stateless),
- the keys and on-screen buttons held right now, and the ones tapped since the last frame,
- Yan-Gen: the prompt, and whether it changed since the last block (the next block then uses it),
- a game loop that advances the world at the model's pace while the visitor plays,
- a bounded recording of the frames shown (JPEG bytes, exported to mp4 on demand),
- the chosen start frame (bundled, or an uploaded image validated by the pipeline itself),
- the visitor's own key bindings.

Concurrency: model calls run in a thread pool (the asyncio event loop never waits on torch), one call at a time
per session (``Session.lock``), and at most ``max_sessions`` sessions play at once (:class:`SlotQueue`, first come
first served, with a visible position for the others). Key events never queue: a message replaces the held-key set,
so a flood of them costs O(1) memory however fast it comes.

Example (what the WebSocket endpoint does, without the network):

```py
>>> manager = SessionManager({"yan-sim-doom": pipe})
>>> session = manager.create_session()
>>> await manager.reset(session.id)                    # new world from the first start frame
>>> await manager.handle(session.id, {"type": "keys", "keys": ["KeyW"]})
>>> await manager.step(session.id)                     # one action: MOVE_FORWARD
>>> session.frame_count
4
```
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import io
import os
import secrets
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

import numpy as np
import PIL.Image
import torch
from diffusers.utils import logging

from ..actions import ActionSpace
from ..pipelines.yan_gen.env_yan_gen import YanGenEnv
from ..pipelines.yan_gen.pipeline_yan_gen import YanGenPipeline
from ..pipelines.yan_sim.env_yan_sim import YanSimEnv
from ..pipelines.yan_sim.pipeline_yan_sim import YanSimPipeline


logger = logging.get_logger(__name__)

# Uploads: a start frame is resized to the model's resolution (a few hundred pixels), so anything much larger than
# a photo is refused before decoding rather than decoded into gigabytes (a "decompression bomb").
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
# A client message lists the held keys; a keyboard has ~100 keys, so more than this is not a keyboard.
MAX_HELD_KEYS = 32
MAX_KEY_NAME_LENGTH = 40
MAX_BINDINGS = 128
# A Yan-Gen prompt: umT5 reads at most 512 tokens (~2000 characters of English); longer text would be cut anyway.
MAX_PROMPT_CHARS = 2000

Listener = Callable[[dict, list], Awaitable[None]]


class SpaceError(ValueError):
    """An error caused by the visitor's input; its message is shown on the page as is (never a stack trace)."""


@dataclasses.dataclass
class SpaceConfig:
    """Knobs of the session manager (``yan play`` flags map onto these).

    Args:
        max_sessions: sessions that may play (run the model) at once; the rest wait in a queue with a visible
            position. It is also the size of the inference thread pool.
        idle_timeout: seconds without any input from a session's page after which its world is freed.
        max_worlds: worlds kept in memory at once (playing, paused or waiting); a new visitor beyond this evicts
            the longest-idle disconnected world, or is refused with a message.
        max_fps: cap on video frames/s per session while playing (``0``: as fast as the model goes). The default
            is the simulator's native rate (``YanSimEnv.metadata["render_fps"]``): a tiny or fast model would
            otherwise run the game faster than it was recorded.
        torch_threads: intra-op torch threads per inference thread. One thread per worker does best on a small
            shared CPU box (measured by the UNet work: several OpenMP pools spin against each other otherwise).
            ``None`` leaves torch's default.
        max_recorded_frames: frames kept per session for the mp4 download (a rolling buffer of JPEG bytes).
        num_inference_steps: denoising steps per frame (the shift-window length) of every world.
        jpeg_quality: quality of the JPEG frames sent to the page and recorded.
        max_clip_actions: the longest rollout the request/response clip mode plays in one request.
        gen_resolution: ``(height, width)`` of Yan-Gen worlds (Yan-Sim models have theirs in their config). The
            default is Wan2.1's 480p; a Yan-Gen model plays at any multiple of 16, slower the larger.
        gen_guidance_scale: classifier-free guidance of Yan-Gen worlds; 1.0 (off) suits the few-step distilled
            generators made for play, > 1 suits base models (and costs a second transformer pass per step).
    """

    max_sessions: int = 2
    idle_timeout: float = 300.0
    max_worlds: int = 32
    max_fps: float = float(YanSimEnv.metadata["render_fps"])
    torch_threads: int | None = 1
    max_recorded_frames: int = 1800
    num_inference_steps: int = 4
    jpeg_quality: int = 85
    max_clip_actions: int = 240
    gen_resolution: tuple[int, int] = (480, 832)
    gen_guidance_scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.max_sessions, int) or self.max_sessions < 1:
            raise ValueError(f"`max_sessions` must be an int >= 1, got {self.max_sessions!r}.")
        if not self.idle_timeout > 0:
            raise ValueError(f"`idle_timeout` must be > 0 seconds, got {self.idle_timeout!r}.")
        if self.max_worlds < self.max_sessions:
            raise ValueError(f"`max_worlds` ({self.max_worlds}) must be >= `max_sessions` ({self.max_sessions}).")
        if self.max_fps < 0:
            raise ValueError(f"`max_fps` must be >= 0 (0: uncapped), got {self.max_fps!r}.")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"`torch_threads` must be >= 1 or None, got {self.torch_threads!r}.")
        if self.max_recorded_frames < 1:
            raise ValueError(f"`max_recorded_frames` must be >= 1, got {self.max_recorded_frames!r}.")
        resolution = self.gen_resolution
        if not (
            isinstance(resolution, (tuple, list))
            and len(resolution) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resolution)
        ):
            raise ValueError(f"`gen_resolution` must be two positive ints (height, width), got {resolution!r}.")
        self.gen_resolution = tuple(resolution)
        if not self.gen_guidance_scale >= 1:
            raise ValueError(f"`gen_guidance_scale` must be >= 1 (1: no guidance), got {self.gen_guidance_scale!r}.")


# ---------------------------------------------------------------------------------------------------- helpers
def load_start_image(data: bytes, pipeline: YanSimPipeline | YanGenPipeline) -> PIL.Image.Image:
    """Decode an uploaded start frame and check that ``pipeline`` accepts it; raise :class:`SpaceError` if not.

    Any format Pillow reads is accepted (PNG, JPEG, WebP, GIF - first frame -, BMP, TIFF, ...), at any size up to
    ``MAX_UPLOAD_PIXELS``; it is resized and center-cropped to the model's resolution. Text-to-video Yan-Gen models
    take no start image.
    """
    if isinstance(pipeline, YanGenPipeline) and not pipeline.is_image_to_video:
        raise SpaceError("This model is text-to-video: its worlds start from the prompt, not from an image.")
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise SpaceError("The upload is empty: choose an image file.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise SpaceError(f"The upload is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(io.BytesIO(data))  # reads the header only: the size is known before decoding
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise SpaceError(
                    f"The image is {image.width}x{image.height}; at most {MAX_UPLOAD_PIXELS // 1_000_000} megapixels"
                    " are accepted (it is resized to the model's resolution anyway)."
                )
            image.load()
    except SpaceError:
        raise
    except Exception as e:  # Pillow raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise SpaceError(
            "This file is not an image the app can read"
            f" ({type(e).__name__}). Upload a PNG, JPEG, WebP, GIF, BMP or TIFF image."
        ) from None
    if isinstance(pipeline, YanSimPipeline):
        try:
            pipeline.preprocess_image(image)  # the pipeline's own validation: modes, sizes
        except (ValueError, TypeError) as e:
            raise SpaceError(f"The model cannot start from this image: {e}") from None
    return image.convert("RGB")  # (Yan-Gen takes any RGB image: YanGenEnv center-crops it to the world's size)


def check_prompt(prompt: Any) -> str:
    """A visitor's Yan-Gen prompt, or :class:`SpaceError` (not a string, or longer than ``MAX_PROMPT_CHARS``)."""
    if not isinstance(prompt, str):
        raise SpaceError(f"The prompt must be text, got {type(prompt).__name__}.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SpaceError(f"The prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are accepted.")
    return prompt


def model_kind(pipeline: Any) -> str | None:
    """What the page is told a model is (``model_info()["kind"]``): ``"yan-sim"``, or ``"yan-gen"`` (the page then
    shows a prompt box); ``None`` for a pipeline the Space cannot play."""
    if isinstance(pipeline, YanGenPipeline):
        return "yan-gen"
    if isinstance(pipeline, YanSimPipeline):
        return "yan-sim"
    return None


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """``uint8 [H, W, 3]`` -> JPEG bytes."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _init_worker_thread(torch_threads: int | None) -> None:
    # Runs once in each inference thread. With OpenMP, the intra-op thread count is per calling thread.
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)


class SlotQueue:
    """A first-come-first-served concurrency limit that knows every waiter's position.

    ``await acquire(key)`` returns when ``key`` holds one of ``limit`` slots (at once if one is free and nobody
    waits). ``position(key)`` is 0 for a holder, 1 for the next in line, and so on; ``on_change`` is called
    whenever positions move, so the pages can show them.
    """

    def __init__(self, limit: int, on_change: Callable[[], None] | None = None):
        self.limit = limit
        self.holders: set[str] = set()
        self.waiting: collections.OrderedDict[str, asyncio.Future] = collections.OrderedDict()
        self.on_change = on_change

    def position(self, key: str) -> int | None:
        if key in self.holders:
            return 0
        for i, waiting_key in enumerate(self.waiting):
            if waiting_key == key:
                return i + 1
        return None

    async def acquire(self, key: str) -> None:
        if key in self.holders:
            return
        if len(self.holders) < self.limit and not self.waiting:
            self.holders.add(key)
            return
        if key not in self.waiting:
            self.waiting[key] = asyncio.get_running_loop().create_future()
            self._changed()
        future = self.waiting[key]
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # cancelled while waiting, or right after being granted a slot: give it back either way
            self.release(key)
            raise

    def release(self, key: str) -> None:
        self.holders.discard(key)
        future = self.waiting.pop(key, None)
        if future is not None and not future.done():
            future.cancel()
        self._grant()

    def _grant(self) -> None:
        while len(self.holders) < self.limit and self.waiting:
            key, future = self.waiting.popitem(last=False)
            if future.done():
                continue
            self.holders.add(key)
            future.set_result(None)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


@dataclasses.dataclass
class ClipRequest:
    """A checked clip-mode request (:meth:`SessionManager.prepare_clip`), all that
    :meth:`SessionManager.render_clip` needs. It pickles: on ZeroGPU it is sent to the GPU worker process.

    Args:
        model: the model's name in the manager.
        image: the RGB start image; ``None`` for text-to-video Yan-Gen models.
        actions: the encoded actions, ``[num_actions, action_dim]`` (one per Yan-Sim frame step / Yan-Gen block).
        prompt: the Yan-Gen prompt; ``None`` for Yan-Sim models.
        seed: the world's seed.
        num_inference_steps: denoising steps per frame (Yan-Sim) or per block (Yan-Gen).
        path: the mp4 to write (created empty, in the manager's ``clip_dir``).
        fps: the video's frame rate.
    """

    model: str
    image: PIL.Image.Image | None
    actions: torch.Tensor
    prompt: str | None
    seed: int
    num_inference_steps: int
    path: str
    fps: int

    @property
    def num_actions(self) -> int:
        return int(self.actions.shape[0])


@dataclasses.dataclass(eq=False)
class Session:
    """One visitor's world and controls. Created by :meth:`SessionManager.create_session`; never shared."""

    id: str
    model: str
    env: YanSimEnv | YanGenEnv
    action_space: ActionSpace  # the model's, with this visitor's key bindings
    created: float
    last_active: float
    held_keys: frozenset = frozenset()
    held_buttons: frozenset = frozenset()
    # keys/buttons pressed since the last frame: a tap shorter than one model call still counts once
    tapped_keys: set = dataclasses.field(default_factory=set)
    tapped_buttons: set = dataclasses.field(default_factory=set)
    status: str = "ready"  # ready | queued | playing | paused | closed
    playing: bool = False
    start_index: int = 0
    start_upload: PIL.Image.Image | None = None
    use_upload: bool = False
    seed: int | None = None
    prompt: str = ""  # Yan-Gen: the text of the world (the page's prompt box)
    prompt_pending: bool = False  # Yan-Gen: the prompt changed since the last block; the next block takes it
    record: bool = True
    recording: collections.deque = dataclasses.field(default_factory=collections.deque)
    last_frames: list = dataclasses.field(default_factory=list)
    frame_count: int = 0  # video frames of the current world
    last_action: list = dataclasses.field(default_factory=list)
    latency_ms: float = 0.0
    fps: float = 0.0
    step_times: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=32))
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    task: asyncio.Task | None = None
    listener: Listener | None = None

    @property
    def has_world(self) -> bool:
        return self.env.state is not None

    @property
    def kind(self) -> str:
        return model_kind(self.env.pipeline)

    def snapshot(self) -> dict:
        """What the page shows about this session (JSON-serialisable)."""
        snapshot = {
            "type": "status",
            "session": self.id,
            "model": self.model,
            "kind": self.kind,
            "status": self.status,
            "frame_index": self.frame_count,
            "has_world": self.has_world,
            "record": self.record,
            "recorded_frames": len(self.recording),
            "key_bindings": dict(self.action_space.key_bindings),
        }
        if isinstance(self.env, YanGenEnv):
            snapshot["prompt"] = self.prompt
        return snapshot


# ---------------------------------------------------------------------------------------------------- manager
class SessionManager:
    """Owns every session, the shared pipelines, the inference threads and the play-slot queue.

    Args:
        pipelines: ``{model name: YanSimPipeline or YanGenPipeline}``; the first is the default. Each is shared by
            all sessions. A Yan-Gen pipeline must be causal (it is stepped block by block) and have an action branch
            (the keys are its controls).
        config: a :class:`SpaceConfig`.

    All methods are coroutines or plain functions meant to run on one asyncio event loop (the server's); model
    calls are sent to the thread pool from there.
    """

    def __init__(self, pipelines: dict[str, YanSimPipeline | YanGenPipeline], config: SpaceConfig | None = None):
        if not pipelines:
            raise ValueError("`pipelines` is empty: the Space needs at least one model.")
        self.pipelines = dict(pipelines)
        self.default_model = next(iter(self.pipelines))
        self.config = config or SpaceConfig()
        for name, pipe in self.pipelines.items():
            if model_kind(pipe) is None:
                raise TypeError(
                    f"pipeline {name!r} must be a YanSimPipeline or a YanGenPipeline, got {type(pipe).__name__}."
                )
            if isinstance(pipe, YanGenPipeline) and pipe.action_space is None:
                raise ValueError(
                    f"pipeline {name!r} has no action branch (`transformer.config.action_space` is None): the keys"
                    " would steer nothing. Convert it with an action space (`yan convert-wan --action-space doom`)."
                )
            try:
                self._make_env(name)  # a causal transformer, a resolution the model can make
            except ValueError as e:
                raise ValueError(f"pipeline {name!r} cannot be played: {e}") from None
            pipe.set_progress_bar_config(disable=True)  # no tqdm bar per world start in the server log
        self.sessions: dict[str, Session] = {}
        self.slots = SlotQueue(self.config.max_sessions, on_change=self._on_queue_change)
        self.executor = ThreadPoolExecutor(
            max_workers=self.config.max_sessions,
            thread_name_prefix="yan-infer",
            initializer=_init_worker_thread,
            initargs=(self.config.torch_threads,),
        )
        self._background: set[asyncio.Task] = set()
        self._reaper: asyncio.Task | None = None
        # clip-mode videos are handed to Gradio by path (it copies them to its cache), so they are kept in one
        # folder and pruned by age rather than deleted at once
        self.clip_dir = tempfile.mkdtemp(prefix="yan-clips-")

    # ------------------------------------------------------------------ info
    def model_info(self, name: str) -> dict:
        """What the page needs to know about a model. ``kind`` is ``"yan-sim"`` or ``"yan-gen"`` (the page then
        shows a prompt box); ``takes_image``: whether worlds start from an image (bundled or uploaded)."""
        pipe = self._pipeline(name)
        env = self._make_env(name)  # cheap: an env makes no model call until reset
        height, width = env.observation_space.shape[:2]
        return {
            "name": name,
            "kind": model_kind(pipe),
            "buttons": list(pipe.action_space.buttons),
            "key_bindings": dict(pipe.action_space.key_bindings),
            "height": height,
            "width": width,
            # Yan-Gen: one action per block of latent frames
            "frames_per_action": pipe.frames_per_action if isinstance(env, YanSimEnv) else env.frames_per_step,
            "fps": env.metadata["render_fps"],
            "takes_image": self._takes_image(name),
            "num_start_frames": len(self._start_frames(name)),
        }

    def public_config(self) -> dict:
        return {
            "models": [self.model_info(name) for name in self.pipelines],
            "default_model": self.default_model,
            "max_sessions": self.config.max_sessions,
            "idle_timeout": self.config.idle_timeout,
            "max_fps": self.config.max_fps,
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "max_prompt_chars": MAX_PROMPT_CHARS,
        }

    def start_frame_path(self, model: str, index: int) -> str:
        frames = self._start_frames(model)
        if not isinstance(index, int) or not 0 <= index < len(frames):
            raise SpaceError(f"Start frame {index!r} does not exist; model {model!r} has {len(frames)}.")
        return frames[index]

    def _pipeline(self, name: str) -> YanSimPipeline | YanGenPipeline:
        if name not in self.pipelines:
            raise SpaceError(f"Unknown model {name!r}; available: {list(self.pipelines)}.")
        return self.pipelines[name]

    def _takes_image(self, name: str) -> bool:
        pipe = self._pipeline(name)
        return not isinstance(pipe, YanGenPipeline) or pipe.is_image_to_video

    def _start_frames(self, name: str) -> list[str]:
        return self._pipeline(name).start_frames if self._takes_image(name) else []

    def _make_env(self, name: str, num_inference_steps: int | None = None) -> YanSimEnv | YanGenEnv:
        """A new env (no world yet) for model ``name``, with the Space's settings (``num_inference_steps``: the
        config's by default)."""
        pipe = self._pipeline(name)
        steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        if isinstance(pipe, YanGenPipeline):
            height, width = self.config.gen_resolution
            return YanGenEnv(
                pipe,
                start_images=[],
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=self.config.gen_guidance_scale,
            )
        return YanSimEnv(pipe, start_images=[], num_inference_steps=steps)

    # ------------------------------------------------------------------ session lifecycle
    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            raise SpaceError("This session has ended (idle for too long or the server restarted); reload the page.")
        return session

    def create_session(self, model: str | None = None) -> Session:
        """A new session with no world yet (``reset``/``play``/``step`` start one)."""
        model = model or self.default_model
        pipe = self._pipeline(model)
        self._ensure_reaper()
        if len(self.sessions) >= self.config.max_worlds:
            self.cleanup_idle()
        if len(self.sessions) >= self.config.max_worlds:
            idle = [s for s in self.sessions.values() if s.listener is None and not s.playing]
            if not idle:
                raise SpaceError(
                    f"The server is full ({self.config.max_worlds} worlds open); try again in a few minutes."
                )
            self.close(min(idle, key=lambda s: s.last_active).id, reason="evicted to make room")
        now = time.monotonic()
        session = Session(
            id=secrets.token_urlsafe(16),
            model=model,
            env=self._make_env(model),
            action_space=pipe.action_space,
            created=now,
            last_active=now,
            recording=collections.deque(maxlen=self.config.max_recorded_frames),
        )
        self.sessions[session.id] = session
        logger.info(f"session {session.id[:6]} opened on {model!r} ({len(self.sessions)} open)")
        return session

    def open(self, session_id: str | None = None, model: str | None = None) -> Session:
        """Resume ``session_id`` if it still exists (a page reload), else create a session."""
        if isinstance(session_id, str) and session_id in self.sessions:
            session = self.sessions[session_id]
            if model in (None, session.model):
                session.last_active = time.monotonic()
                return session
            self.close(session_id, reason="model changed")
        return self.create_session(model)

    def attach(self, session_id: str, listener: Listener) -> None:
        """Send this session's frames and status messages to ``listener(meta, frames)`` (its page)."""
        session = self.get(session_id)
        session.listener = listener
        session.last_active = time.monotonic()

    async def detach(self, session_id: str, listener: Listener | None = None) -> None:
        """The page went away: stop playing and release held keys; the world is kept until the idle timeout."""
        session = self.sessions.get(session_id)
        if session is None or (listener is not None and session.listener is not listener):
            return  # already closed, or another connection (a reload) took over
        session.listener = None
        session.held_keys = session.held_buttons = frozenset()
        session.last_active = time.monotonic()
        await self.pause(session_id)

    def close(self, session_id: str, reason: str = "closed") -> None:
        """Free a session: stop its loop, give back its slot, drop its world and recording."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        session.playing = False
        session.status = "closed"
        if session.task is not None and not session.task.done():
            session.task.cancel()
        self.slots.release(session_id)
        listener, session.listener = session.listener, None
        session.env.state = None
        session.recording.clear()
        if listener is not None:
            self._spawn(listener({**session.snapshot(), "message": f"Session {reason}."}, []))
        logger.info(f"session {session_id[:6]} {reason} ({len(self.sessions)} open)")

    def cleanup_idle(self, now: float | None = None) -> list[str]:
        """Close sessions without input for ``idle_timeout`` seconds. A connected page holding a key is not idle."""
        now = time.monotonic() if now is None else now
        freed = []
        for session in list(self.sessions.values()):
            holding = session.listener is not None and (session.held_keys or session.held_buttons)
            if not holding and now - session.last_active > self.config.idle_timeout:
                self.close(session.id, reason=f"freed after {self.config.idle_timeout:g} s without input")
                freed.append(session.id)
        return freed

    def _ensure_reaper(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # created outside the event loop (a test); cleanup_idle can be called directly
            return
        if self._reaper is None or self._reaper.done():
            self._reaper = loop.create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        period = min(max(self.config.idle_timeout / 4, 0.05), 10.0)
        while True:
            await asyncio.sleep(period)
            self.cleanup_idle()

    async def shutdown(self) -> None:
        """Close every session and stop the background tasks and threads (the server's shutdown hook)."""
        for session_id in list(self.sessions):
            self.close(session_id, reason="closed: the server is shutting down")
        if self._reaper is not None:
            self._reaper.cancel()
        for task in list(self._background):
            task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.clip_dir, ignore_errors=True)

    # ------------------------------------------------------------------ commands (the WebSocket messages)
    async def handle(self, session_id: str, message: Any) -> None:
        """Apply one message from a page. Long commands (play, step, reset) run as tasks, so the page's key
        messages keep being read meanwhile. Raises :class:`SpaceError` for a bad message."""
        session = self.get(session_id)
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise SpaceError('A message must be a JSON object with a "type".')
        session.last_active = time.monotonic()
        kind = message["type"]
        if kind == "keys":
            self.set_keys(session_id, message.get("keys", []), message.get("buttons", []))
        elif kind == "play":
            await self.play(session_id)
        elif kind == "pause":
            await self.pause(session_id)
        elif kind == "step":
            self._spawn(self._reporting(session, self.step(session_id)))
        elif kind == "reset":
            start = message.get("start", {})
            seed = message.get("seed")
            self._spawn(self._reporting(session, self.reset(session_id, start=start, seed=seed)))
        elif kind == "bindings":
            self.set_bindings(session_id, message.get("bindings"))
            await self._emit(session, session.snapshot())
        elif kind == "record":
            self.set_record(session_id, message.get("on", True))
            await self._emit(session, session.snapshot())
        elif kind == "prompt":
            self.set_prompt(session_id, message.get("prompt"))
            when = "from the next block" if session.has_world else "when the world starts"
            await self._emit(session, {**session.snapshot(), "message": f"New prompt: it applies {when}."})
        elif kind == "ping":
            await self._emit(session, {"type": "pong", "t": message.get("t")})
        else:
            raise SpaceError(
                f"Unknown message type {kind!r}; expected keys, play, pause, step, reset, bindings, record, prompt."
            )

    def set_keys(self, session_id: str, keys: Any, buttons: Any = ()) -> None:
        """Replace the held keys (``KeyboardEvent.code`` names) and on-screen buttons (button names).

        This is the coalescing point: however many key messages arrive between two frames, only the latest held
        set and the union of taps survive, both bounded by the number of keys.
        """
        session = self.get(session_id)
        keys = self._names(keys, "keys")
        buttons = self._names(buttons, "buttons")
        unknown = sorted(b for b in buttons if b not in session.action_space.buttons)
        if unknown:
            raise SpaceError(f"Unknown buttons {unknown}; this model has {list(session.action_space.buttons)}.")
        session.tapped_keys |= keys - session.held_keys
        session.tapped_buttons |= buttons - session.held_buttons
        session.held_keys, session.held_buttons = keys, buttons
        session.last_active = time.monotonic()

    @staticmethod
    def _names(values: Any, arg: str) -> frozenset:
        if values is None:
            return frozenset()
        if not isinstance(values, (list, tuple, set, frozenset)):
            raise SpaceError(f"`{arg}` must be a list of names.")
        if len(values) > MAX_HELD_KEYS:
            raise SpaceError(f"`{arg}`: at most {MAX_HELD_KEYS} held at once, got {len(values)}.")
        if not all(isinstance(v, str) and 0 < len(v) <= MAX_KEY_NAME_LENGTH for v in values):
            raise SpaceError(f"`{arg}` must hold non-empty names of at most {MAX_KEY_NAME_LENGTH} characters.")
        return frozenset(values)

    def set_bindings(self, session_id: str, bindings: Any) -> None:
        """Use the visitor's keymap ``{KeyboardEvent.code: button}``; ``None`` or ``{}`` restores the model's."""
        session = self.get(session_id)
        model_space = self._pipeline(session.model).action_space
        if bindings is None or bindings == {}:
            session.action_space = model_space
            return
        if not isinstance(bindings, dict) or len(bindings) > MAX_BINDINGS:
            raise SpaceError(f"Key bindings must be an object {{key code: button}} with at most {MAX_BINDINGS} keys.")
        for code, button in bindings.items():
            if not (isinstance(button, str) and 0 < len(code) <= MAX_KEY_NAME_LENGTH):
                raise SpaceError(f"Bad key binding {code!r}: {button!r}.")
        try:
            session.action_space = dataclasses.replace(model_space, key_bindings=bindings)
        except ValueError as e:
            raise SpaceError(str(e)) from None

    def set_record(self, session_id: str, on: Any) -> None:
        self.get(session_id).record = bool(on)

    def set_prompt(self, session_id: str, prompt: Any) -> None:
        """Change a Yan-Gen world's text: the next block (and every later one) follows it; a new world starts from
        it. Frames already made are not touched (the world goes on from them: text-guided expansion)."""
        session = self.get(session_id)
        if not isinstance(session.env, YanGenEnv):
            raise SpaceError(f"Model {session.model!r} is a Yan-Sim model: it takes no prompt, only keys.")
        session.prompt = check_prompt(prompt)
        session.prompt_pending = session.has_world
        session.last_active = time.monotonic()

    def set_start_image(self, session_id: str, data: bytes) -> None:
        """Validate an uploaded start frame; the next ``reset`` with ``{"kind": "upload"}`` starts from it."""
        session = self.get(session_id)
        session.start_upload = load_start_image(data, self._pipeline(session.model))
        session.use_upload = True
        session.last_active = time.monotonic()

    def current_action(self, session: Session, consume: bool = True) -> torch.Tensor:
        """The action of the next frame: held keys and buttons, plus the ones tapped since the last frame."""
        space = session.action_space
        keys = session.held_keys | session.tapped_keys
        buttons = session.held_buttons | session.tapped_buttons
        names = {space.key_bindings[k] for k in keys if k in space.key_bindings} | set(buttons)
        if consume:
            session.tapped_keys, session.tapped_buttons = set(), set()
        return space.encode(sorted(names), arg="held keys")

    async def play(self, session_id: str) -> None:
        """Start (or resume) the game loop: it waits for a play slot, then advances the world frame after frame."""
        session = self.get(session_id)
        if session.task is not None and not session.task.done():
            return
        session.playing = True
        session.task = asyncio.get_running_loop().create_task(self._play_loop(session))

    async def pause(self, session_id: str) -> None:
        """Stop the game loop after the current frame and give the play slot to the next in the queue."""
        session = self.get(session_id)
        session.playing = False
        task = session.task
        if task is not None and not task.done():
            if self.slots.position(session_id) not in (None, 0):
                task.cancel()  # still queued: leave the queue now
            try:
                await task
            except asyncio.CancelledError:
                pass
        if session_id in self.sessions:
            session.status = "paused" if session.has_world else "ready"
            await self._emit(session, session.snapshot())

    async def step(self, session_id: str) -> None:
        """Advance the world by one action (the held keys), starting a world first if there is none."""
        session = self.get(session_id)
        if session.playing:
            return  # the loop is stepping already
        await self._with_slot(session, self._advance(session))

    async def reset(self, session_id: str, start: Any = None, seed: Any = None) -> None:
        """Start a new world. ``start``: ``{"kind": "bundled", "index": i}`` (default: the current choice) or
        ``{"kind": "upload"}`` (the image given to :meth:`set_start_image`); ``seed``: an int, or None for random."""
        session = self.get(session_id)
        start = start or {}
        if not isinstance(start, dict):
            raise SpaceError('`start` must be {"kind": "bundled", "index": i} or {"kind": "upload"}.')
        kind = start.get("kind", "upload" if session.use_upload else "bundled")
        if not self._takes_image(session.model):
            if kind == "upload":
                raise SpaceError("This model is text-to-video: its worlds start from the prompt, not from an image.")
            if kind != "bundled":
                raise SpaceError(f"Unknown start kind {kind!r}; expected 'bundled' or 'upload'.")
        elif kind == "upload":
            if session.start_upload is None:
                raise SpaceError("No uploaded start image yet: upload one first.")
            session.use_upload = True
        elif kind == "bundled":
            index = start.get("index", session.start_index)
            self.start_frame_path(session.model, index)  # validates
            session.start_index, session.use_upload = index, False
        else:
            raise SpaceError(f"Unknown start kind {kind!r}; expected 'bundled' or 'upload'.")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**62):
            raise SpaceError(f"`seed` must be an integer in [0, 2**62), got {seed!r}.")
        session.seed = seed
        was_playing = session.playing
        if was_playing:
            await self.pause(session_id)
        await self._with_slot(session, self._new_world(session))
        if was_playing:
            await self.play(session_id)

    # ------------------------------------------------------------------ the game loop and model calls
    async def _play_loop(self, session: Session) -> None:
        try:
            if self.slots.position(session.id) != 0:
                session.status = "queued"
                await self.slots.acquire(session.id)  # positions are pushed to the page by _on_queue_change
            session.status = "playing"
            await self._emit(session, session.snapshot())
            while session.playing and session.id in self.sessions:
                started = time.monotonic()
                num_frames = await self._advance(session)  # a Yan-Sim action or a whole Yan-Gen block
                min_interval = num_frames / self.config.max_fps if self.config.max_fps > 0 else 0.0
                spare = min_interval - (time.monotonic() - started)
                # always yield once, so a model faster than the event loop cannot starve the other sessions
                await asyncio.sleep(max(spare, 0.0))
        except SpaceError as e:
            session.playing = False
            await self._emit(session, {"type": "error", "message": str(e)})
        finally:
            self.slots.release(session.id)
            if session.status in ("queued", "playing"):
                session.status = "paused" if session.has_world else "ready"

    async def _with_slot(self, session: Session, coroutine) -> None:
        """Run a one-off model call (step, reset) under a play slot; a playing session already holds one."""
        if self.slots.position(session.id) == 0:
            await coroutine
            return
        try:
            if len(self.slots.holders) >= self.slots.limit:
                session.status = "queued"
            await self.slots.acquire(session.id)
            await coroutine
        finally:
            coroutine.close()  # no-op if it ran; avoids "never awaited" if the wait was cancelled
            if not session.playing:
                self.slots.release(session.id)
                if session.status == "queued" and session.id in self.sessions:
                    session.status = "paused" if session.has_world else "ready"

    def _start_image(self, session: Session) -> PIL.Image.Image | None:
        if not self._takes_image(session.model):
            return None  # a text-to-video world starts from its prompt
        if session.use_upload and session.start_upload is not None:
            return session.start_upload
        frames = self._start_frames(session.model)
        if not frames:
            raise SpaceError("This model ships no start frames: upload a start image.")
        with PIL.Image.open(self.start_frame_path(session.model, session.start_index)) as image:
            return image.convert("RGB")

    async def _new_world(self, session: Session) -> int:
        image = self._start_image(session)
        seed = session.seed
        action = self.current_action(session)
        options = {"image": image, "action": action}
        if isinstance(session.env, YanGenEnv):
            options["prompt"] = session.prompt
            session.prompt_pending = False

        def run():
            return session.env.reset(seed=seed, options=options)

        async with session.lock:
            session.recording.clear()
            session.frame_count = 0
            return await self._run_model(session, run, action)

    async def _advance(self, session: Session) -> int:
        """One env step (a new world first if there is none); returns the number of video frames it made."""
        if not session.has_world:
            return await self._new_world(session)
        action = self.current_action(session)
        # a prompt changed since the last block goes to the env right before this step, on the inference thread
        # (the env is only ever touched there, one call at a time)
        prompt = session.prompt if session.prompt_pending else None
        session.prompt_pending = False

        def run():
            if prompt is not None:
                session.env.set_prompt(prompt)
            return session.env.step(action)

        async with session.lock:
            return await self._run_model(session, run, action)

    async def _run_model(self, session: Session, fn: Callable, action: torch.Tensor) -> int:
        """Run one env call in the thread pool, encode its frames there, then record and send them (all the frames
        of the call: one Yan-Sim action's, or one Yan-Gen block's); returns how many."""
        quality = self.config.jpeg_quality

        def work():
            _, *rest = fn()
            info = rest[-1]
            return [encode_jpeg(frame, quality) for frame in info["frames"]]

        started = time.monotonic()
        try:
            jpegs = await asyncio.get_running_loop().run_in_executor(self.executor, work)
        except (ValueError, TypeError) as e:  # input the pipeline refused: show it, keep the server up
            raise SpaceError(str(e)) from None
        done = time.monotonic()
        session.latency_ms = 1000 * (done - started)
        session.step_times.append((done, len(jpegs)))
        if len(session.step_times) > 1:
            span = done - session.step_times[0][0]
            frames = sum(n for _, n in list(session.step_times)[1:])
            session.fps = frames / span if span > 0 else 0.0
        session.frame_count += len(jpegs)
        session.last_frames = jpegs
        session.last_action = session.action_space.pressed(action)
        if session.record:
            session.recording.extend(jpegs)
        meta = {
            "type": "frame",
            "frame_index": session.frame_count,
            "latency_ms": round(session.latency_ms, 1),
            "fps": round(session.fps, 2),
            "action": session.last_action,
            "status": session.status,
            "recorded_frames": len(session.recording),
            "n": len(jpegs),
        }
        await self._emit(session, meta, jpegs)
        return len(jpegs)

    # ------------------------------------------------------------------ recording
    async def export_recording(self, session_id: str, fps: int | None = None) -> str:
        """Write the session's recorded frames to an mp4 (diffusers' ``export_to_video``); returns its path."""
        from diffusers.utils import export_to_video

        session = self.get(session_id)
        jpegs = list(session.recording)
        if not jpegs:
            raise SpaceError("Nothing recorded yet: play a little first (and keep Record on).")
        fps = fps or int(session.env.metadata["render_fps"])
        handle, path = tempfile.mkstemp(prefix="yan-recording-", suffix=".mp4")
        os.close(handle)

        def work():
            frames = [np.asarray(PIL.Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]
            return export_to_video(frames, path, fps=fps)

        return await asyncio.get_running_loop().run_in_executor(None, work)

    # ------------------------------------------------------------------ request/response clip mode
    def prepare_clip(
        self,
        actions: Any,
        model: str | None = None,
        start_index: int = 0,
        upload: bytes | None = None,
        seed: int = 0,
        fps: int | None = None,
        prompt: str | None = None,
    ) -> ClipRequest:
        """Check a clip-mode request and gather what rendering it needs (no model call): the start image (bundled
        frame ``start_index``, or the ``upload``), the encoded ``actions``, the prompt, and a new mp4 path in
        :attr:`clip_dir`. Raises :class:`SpaceError` for bad input.

        Yan-Gen models take one action per block and start from ``prompt`` (default ``""``); text-to-video ones
        take no start image. Yan-Sim models take no prompt. ``fps`` defaults to the model's frame rate."""
        model = model or self.default_model
        pipe = self._pipeline(model)
        if prompt is not None and not isinstance(pipe, YanGenPipeline):
            raise SpaceError(f"Model {model!r} is a Yan-Sim model: it takes no prompt, only actions.")
        if isinstance(pipe, YanGenPipeline):
            prompt = check_prompt("" if prompt is None else prompt)
        try:
            encoded = pipe.action_space.encode_sequence(actions, arg="actions")
        except (ValueError, TypeError) as e:
            raise SpaceError(str(e)) from None
        if encoded.shape[0] > self.config.max_clip_actions:
            raise SpaceError(f"At most {self.config.max_clip_actions} actions per clip, got {encoded.shape[0]}.")
        if upload is not None:
            image = load_start_image(upload, pipe)
        elif not self._takes_image(model):
            image = None
        else:
            with PIL.Image.open(self.start_frame_path(model, start_index)) as im:
                image = im.convert("RGB")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**62:
            raise SpaceError(f"`seed` must be an integer in [0, 2**62), got {seed!r}.")
        if fps is None:
            fps = int((YanGenEnv if isinstance(pipe, YanGenPipeline) else YanSimEnv).metadata["render_fps"])
        elif not isinstance(fps, int) or isinstance(fps, bool) or fps < 1:
            raise SpaceError(f"`fps` must be a positive integer, got {fps!r}.")
        self._prune_clips()
        handle, path = tempfile.mkstemp(prefix="clip-", suffix=".mp4", dir=self.clip_dir)
        os.close(handle)
        return ClipRequest(
            model=model,
            image=image,
            actions=encoded,
            prompt=prompt,
            seed=seed,
            num_inference_steps=self.config.num_inference_steps,
            path=path,
            fps=fps,
        )

    def render_clip(self, request: ClipRequest) -> str:
        """Play a request made by :meth:`prepare_clip` and write its mp4; returns the path. Synchronous: it runs on
        the manager's thread pool (:meth:`play_clip`) or in a ZeroGPU worker process (``zerogpu.py``), and touches
        no session, play slot or event loop. A Yan-Gen clip plays in an env of live play (one block per action)."""
        from diffusers.utils import export_to_video

        pipe = self._pipeline(request.model)
        try:
            if isinstance(pipe, YanGenPipeline):
                env = self._make_env(request.model, num_inference_steps=request.num_inference_steps)
                options = {"image": request.image, "action": request.actions[0], "prompt": request.prompt}
                _, info = env.reset(seed=request.seed, options=options)
                frames = list(info["frames"])
                for action in request.actions[1:]:
                    frames.extend(env.step(action)[-1]["frames"])
            else:
                out = pipe(
                    image=request.image,
                    actions=request.actions,
                    num_inference_steps=request.num_inference_steps,
                    generator=torch.Generator().manual_seed(request.seed),
                    output_type="np",
                )
                frames = list((out.frames[0] * 255).round().astype(np.uint8))
            return export_to_video(frames, request.path, fps=request.fps)
        except BaseException as e:
            try:  # no empty or half-written video is left for Gradio to serve
                os.remove(request.path)
            except OSError:
                pass
            if isinstance(e, (ValueError, TypeError)):  # input the pipeline refused: show it as the visitor's error
                raise SpaceError(str(e)) from None
            raise

    async def play_clip(self, actions: Any, **options) -> str:
        """Start a world, play ``actions`` in it and return an mp4 path: the stateless mode for shared-GPU Spaces
        (ZeroGPU), where no GPU is held between requests. :meth:`prepare_clip` (``options`` are its ``model``,
        ``start_index``, ``upload``, ``seed``, ``fps`` and ``prompt``), then :meth:`render_clip` on the thread pool,
        under a play slot shared with the live sessions."""
        request = self.prepare_clip(actions, **options)
        key = f"clip-{secrets.token_hex(6)}"
        await self.slots.acquire(key)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.render_clip, request)
        finally:
            self.slots.release(key)

    def _prune_clips(self, max_age: float = 600.0) -> None:
        now = time.time()
        for entry in os.scandir(self.clip_dir):
            try:
                if now - entry.stat().st_mtime > max_age:
                    os.remove(entry.path)
            except OSError:  # removed meanwhile, or still being written on another thread
                pass

    # ------------------------------------------------------------------ messages to the pages
    async def _emit(self, session: Session, meta: dict, frames: list | tuple = ()) -> None:
        listener = session.listener
        if listener is None:
            return
        try:
            await listener(meta, list(frames))
        except Exception as e:  # the page went away mid-send; its connection handler detaches it
            logger.debug(f"session {session.id[:6]}: send failed ({type(e).__name__})")

    async def _reporting(self, session: Session, coroutine) -> None:
        try:
            await coroutine
        except SpaceError as e:
            await self._emit(session, {"type": "error", "message": str(e)})

    def _on_queue_change(self) -> None:
        for key in list(self.slots.waiting):
            session = self.sessions.get(key)
            if session is not None:
                message = {**session.snapshot(), "status": "queued", "queue_position": self.slots.position(key)}
                self._spawn(self._emit(session, message))

    def _spawn(self, coroutine) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coroutine)
        except RuntimeError:  # no running loop (closing from a plain thread): nothing to send to
            coroutine.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)
