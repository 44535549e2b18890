"""The Space's session manager, at the handler level (no network): lifecycle, uploads, recording, queueing,
idle cleanup, key-flood coalescing, and independent worlds on one shared pipeline. Tiny random pipeline."""

import asyncio
import io
import os
import time

import numpy as np
import PIL.Image
import pytest


pytest.importorskip("fastapi", reason="the Space needs the [space] extra (fastapi via gradio)")

from diffusers_yan.space import SessionManager, SpaceConfig, SpaceError  # noqa: E402

from .test_pipeline_yan_sim import make_pipe, start_image  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny model with bundled start frames, as `yan play --model PATH` would load."""
    path = tmp_path_factory.mktemp("space_model") / "tiny-sim"
    pipe = make_pipe()
    pipe.save_pretrained(path)
    os.makedirs(path / "start_frames")
    for i in range(2):
        start_image(seed=i, size=(48, 64)).save(path / "start_frames" / f"{i:03d}.png")
    return str(path)


@pytest.fixture(scope="module")
def pipe(model_dir):
    from diffusers_yan import YanSimPipeline

    return YanSimPipeline.from_pretrained(model_dir)


def manager_for(pipe, **kw):
    kw.setdefault("max_fps", 0)  # uncapped: tests should not wait on the frame pacing
    return SessionManager({"tiny-sim": pipe}, SpaceConfig(**kw))


class Inbox:
    """A page stand-in: records what the session sends."""

    def __init__(self):
        self.messages, self.frames = [], []

    async def __call__(self, meta, frames):
        self.messages.append(meta)
        self.frames.extend(frames)

    def of_type(self, kind):
        return [m for m in self.messages if m["type"] == kind]


def run(coroutine):
    return asyncio.run(coroutine)


async def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def png_bytes(image, fmt="PNG"):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_lifecycle_start_keys_step_play_pause_reset(pipe):
    async def main():
        manager = manager_for(pipe)
        session = manager.create_session()
        inbox = Inbox()
        manager.attach(session.id, inbox)
        fpa = pipe.frames_per_action

        # start: reset builds a world from the first bundled start frame; frames arrive as JPEGs
        await manager.handle(session.id, {"type": "reset", "seed": 0})
        await wait_for(lambda: session.has_world)
        await wait_for(lambda: len(inbox.frames) == fpa)
        assert inbox.frames[0][:2] == b"\xff\xd8" and session.frame_count == fpa
        first = session.last_frames[-1]

        # keys: held keys become the next action (KeyW -> MOVE_FORWARD, ArrowLeft -> TURN_LEFT); unknown keys ignored
        await manager.handle(session.id, {"type": "keys", "keys": ["KeyW", "ArrowLeft", "F13"]})
        await manager.step(session.id)
        assert session.last_action == ["MOVE_FORWARD", "TURN_LEFT"]
        assert session.frame_count == 2 * fpa and session.last_frames[-1] != first
        meta = inbox.of_type("frame")[-1]
        assert meta["frame_index"] == 2 * fpa and meta["latency_ms"] > 0 and meta["n"] == fpa

        # play: the loop advances on its own until paused
        await manager.handle(session.id, {"type": "play"})
        await wait_for(lambda: session.frame_count >= 8 * fpa)
        await manager.handle(session.id, {"type": "pause"})
        assert session.status == "paused" and not session.playing
        assert inbox.of_type("frame")[-1]["fps"] > 0
        paused_at = session.frame_count
        await asyncio.sleep(0.1)
        assert session.frame_count == paused_at  # paused: nothing advances
        assert manager.slots.holders == set()  # a paused session holds no play slot

        # release keys: the next action is NOOP
        await manager.handle(session.id, {"type": "keys", "keys": []})
        await manager.step(session.id)
        assert session.last_action == []

        # reset with the same seed and start replays the same world from frame 0
        await manager.reset(session.id, start={"kind": "bundled", "index": 0}, seed=0)
        assert session.frame_count == fpa and session.last_frames[-1] == first
        # another bundled start frame gives another world
        await manager.reset(session.id, start={"kind": "bundled", "index": 1}, seed=0)
        assert session.last_frames[-1] != first
        with pytest.raises(SpaceError, match="does not exist"):
            await manager.reset(session.id, start={"kind": "bundled", "index": 7})
        with pytest.raises(SpaceError, match="Unknown message type"):
            await manager.handle(session.id, {"type": "teleport"})
        await manager.shutdown()

    run(main())


def test_tap_between_frames_counts_once(pipe):
    async def main():
        manager = manager_for(pipe)
        session = manager.create_session()
        await manager.reset(session.id, seed=0)
        manager.set_keys(session.id, ["Space"])  # pressed and released before the next frame
        manager.set_keys(session.id, [])
        await manager.step(session.id)
        assert session.last_action == ["ATTACK"]
        await manager.step(session.id)
        assert session.last_action == []
        await manager.shutdown()

    run(main())


def test_upload_good_and_bad(pipe):
    async def main():
        manager = manager_for(pipe)
        session = manager.create_session()
        inbox = Inbox()
        manager.attach(session.id, inbox)
        # any size and any format Pillow reads: a wide JPEG, a grayscale WebP, a palette GIF
        rng = np.random.default_rng(0)
        wide = PIL.Image.fromarray(rng.integers(0, 255, (90, 300, 3), dtype=np.uint8))
        for data in (
            png_bytes(wide, "JPEG"),
            png_bytes(wide.convert("L"), "WEBP"),
            png_bytes(wide.convert("P"), "GIF"),
        ):
            manager.set_start_image(session.id, data)
        await manager.handle(session.id, {"type": "reset", "start": {"kind": "upload"}, "seed": 0})
        # the env holds a world once its call returns; the frames are counted when they reach the session
        await wait_for(lambda: session.has_world and session.frame_count > 0)
        assert session.use_upload and session.frame_count == pipe.frames_per_action

        bad = {
            b"": "empty",
            b"this is not an image at all": "not an image",
            png_bytes(wide)[:60]: "not an image",  # truncated PNG
            b"<svg xmlns='http://www.w3.org/2000/svg'/>": "not an image",
        }
        for data, match in bad.items():
            with pytest.raises(SpaceError, match=match):
                manager.set_start_image(session.id, data)
        huge = PIL.Image.new("1", (8000, 6000))  # 48 MP, tiny as a file: refused before decoding
        with pytest.raises(SpaceError, match="megapixels"):
            manager.set_start_image(session.id, png_bytes(huge))
        # a failed upload leaves the previous start image in place
        assert session.start_upload is not None

        # a session without an upload asking for one gets a message, not an exception on the page
        other = manager.create_session()
        other_inbox = Inbox()
        manager.attach(other.id, other_inbox)
        await manager.handle(other.id, {"type": "reset", "start": {"kind": "upload"}})
        await wait_for(lambda: other_inbox.of_type("error"))
        assert "upload one first" in other_inbox.of_type("error")[0]["message"]
        await manager.shutdown()

    run(main())


def test_record_and_download_mp4(pipe, tmp_path):
    import imageio.v3 as iio

    async def main():
        manager = manager_for(pipe, max_recorded_frames=10)
        session = manager.create_session()
        with pytest.raises(SpaceError, match="Nothing recorded"):
            await manager.export_recording(session.id)
        await manager.reset(session.id, seed=0)
        for _ in range(7):
            await manager.step(session.id)
        assert len(session.recording) == 10  # bounded: the last 10 frames of 16
        path = await manager.export_recording(session.id)
        frames = iio.imread(path, plugin="pyav") if _has_pyav() else iio.imread(path)
        assert frames.shape[0] == 10 and frames.shape[-1] == 3
        os.remove(path)
        # recording off: frames are shown but not kept
        manager.set_record(session.id, False)
        before = list(session.recording)
        await manager.step(session.id)
        assert list(session.recording) == before
        await manager.shutdown()

    run(main())


def _has_pyav():
    try:
        import av  # noqa: F401

        return True
    except ImportError:
        return False


def test_idle_sessions_are_freed(pipe):
    async def main():
        manager = manager_for(pipe, idle_timeout=0.3)
        idle, busy = manager.create_session(), manager.create_session()
        inbox = Inbox()
        manager.attach(idle.id, inbox)
        await manager.reset(idle.id, seed=0)
        await manager.reset(busy.id, seed=0)
        for _ in range(8):  # `busy` keeps sending input; `idle` says nothing
            await asyncio.sleep(0.1)
            manager.set_keys(busy.id, ["KeyW"] if _ % 2 else [])
        # the background reaper freed the idle one and told its page why
        assert idle.id not in manager.sessions and busy.id in manager.sessions
        assert idle.env.state is None and len(idle.recording) == 0
        assert "without input" in inbox.messages[-1]["message"] and inbox.messages[-1]["status"] == "closed"
        with pytest.raises(SpaceError, match="ended"):
            await manager.handle(idle.id, {"type": "play"})
        await manager.shutdown()

    run(main())


def test_concurrency_limit_queues_with_visible_position(pipe):
    async def main():
        manager = manager_for(pipe, max_sessions=1)
        sessions = [manager.create_session() for _ in range(3)]
        inboxes = [Inbox() for _ in sessions]
        for s, inbox in zip(sessions, inboxes):
            manager.attach(s.id, inbox)
            await manager.play(s.id)
        first, second, third = sessions
        await wait_for(lambda: first.frame_count > 0)
        await wait_for(lambda: manager.slots.position(third.id) == 2)
        assert manager.slots.position(first.id) == 0 and manager.slots.position(second.id) == 1
        assert second.status == "queued" and second.frame_count == 0 and third.frame_count == 0
        assert inboxes[2].of_type("status")[-1]["queue_position"] == 2

        # the first player pauses: the second gets the seat, the third moves up to #1
        await manager.pause(first.id)
        await wait_for(lambda: second.frame_count > 0)
        await wait_for(lambda: inboxes[2].of_type("status")[-1].get("queue_position") == 1)
        # a queued player who gives up leaves the queue
        await manager.pause(third.id)
        assert manager.slots.position(third.id) is None and third.status == "ready"
        # one-off steps of a paused player wait their turn too, then give the seat back
        step = asyncio.ensure_future(manager.step(first.id))
        await wait_for(lambda: manager.slots.position(first.id) == 1)
        await manager.pause(second.id)
        await step
        assert manager.slots.holders == set()
        await manager.shutdown()

    run(main())


def test_key_flood_is_coalesced(pipe):
    async def main():
        manager = manager_for(pipe, max_sessions=2)
        flooder, other = manager.create_session(), manager.create_session()
        for s in (flooder, other):
            manager.attach(s.id, Inbox())
            await manager.reset(s.id, seed=0)
            await manager.play(s.id)
        other_start = other.frame_count
        started = time.monotonic()
        for i in range(20_000):  # a scripted spam of key messages, far faster than frames
            await manager.handle(flooder.id, {"type": "keys", "keys": ["KeyW", "KeyD"] if i % 2 else ["Space"]})
            if i % 500 == 0:
                await asyncio.sleep(0)  # let the loops run, as the server's event loop would between messages
        elapsed = time.monotonic() - started
        # O(1) state per session: the held set and the taps since the last frame, never a queue of events
        assert flooder.held_keys == frozenset({"KeyW", "KeyD"})
        assert flooder.tapped_keys <= {"KeyW", "KeyD", "Space"}
        await wait_for(lambda: other.frame_count > other_start + 4)  # the other player was not stalled
        await manager.step(flooder.id)  # paused or not, the next frame uses the coalesced state
        assert set(flooder.last_action) <= {"MOVE_FORWARD", "MOVE_RIGHT", "ATTACK"}
        assert elapsed < 20
        with pytest.raises(SpaceError, match="at most"):
            manager.set_keys(flooder.id, [f"Key{i}" for i in range(100)])
        await manager.shutdown()

    run(main())


def test_two_interleaved_sessions_stay_independent(pipe):
    """Two worlds stepped alternately (and concurrently) on one pipeline give exactly the frames each gives alone."""

    async def alone(actions):
        manager = manager_for(pipe)
        s = manager.create_session()
        await manager.reset(s.id, seed=0)
        frames = []
        for keys in actions:
            manager.set_keys(s.id, keys)
            await manager.step(s.id)
            frames.append(s.last_frames[-1])
        await manager.shutdown()
        return frames

    a_keys = [["KeyW"], ["KeyW"], ["ArrowLeft"], ["Space"], []]
    b_keys = [["KeyS"], ["KeyD"], ["KeyD"], [], ["KeyE", "KeyW"]]

    async def together():
        manager = manager_for(pipe, max_sessions=2)
        a, b = manager.create_session(), manager.create_session()
        await asyncio.gather(manager.reset(a.id, seed=0), manager.reset(b.id, seed=0))
        fa, fb = [], []
        for ka, kb in zip(a_keys, b_keys):
            manager.set_keys(a.id, ka)
            manager.set_keys(b.id, kb)
            await asyncio.gather(manager.step(a.id), manager.step(b.id))  # both in the thread pool at once
            fa.append(a.last_frames[-1])
            fb.append(b.last_frames[-1])
        assert a.env is not b.env and a.env.pipeline is b.env.pipeline  # one shared pipeline
        await manager.shutdown()
        return fa, fb

    fa, fb = run(together())
    assert fa == run(alone(a_keys))
    assert fb == run(alone(b_keys))
    assert fa != fb


def test_custom_key_bindings(pipe):
    async def main():
        manager = manager_for(pipe)
        a, b = manager.create_session(), manager.create_session()
        await manager.handle(a.id, {"type": "bindings", "bindings": {"KeyI": "MOVE_FORWARD", "KeyJ": "TURN_LEFT"}})
        manager.set_keys(a.id, ["KeyI", "KeyJ", "KeyW"])  # KeyW is no longer bound for this visitor
        assert (
            manager.current_action(a, consume=False).tolist()
            == pipe.action_space.encode("MOVE_FORWARD+TURN_LEFT").tolist()
        )
        manager.set_keys(b.id, ["KeyW"])  # the other visitor keeps the model's bindings
        assert pipe.action_space.pressed(manager.current_action(b)) == ["MOVE_FORWARD"]
        with pytest.raises(SpaceError, match="unknown buttons"):
            manager.set_bindings(a.id, {"KeyK": "JUMP"})
        manager.set_bindings(a.id, {})  # back to the model's
        assert a.action_space.key_bindings == pipe.action_space.key_bindings
        await manager.shutdown()

    run(main())


def test_clip_mode_plays_actions_to_mp4(pipe):
    import pickle

    import imageio.v3 as iio

    async def main():
        manager = manager_for(pipe)
        path = await manager.play_clip("MOVE_FORWARD*3,TURN_LEFT", start_index=1, seed=1)
        assert os.path.getsize(path) > 0 and os.path.dirname(path) == manager.clip_dir
        assert not manager.slots.holders  # the clip's play slot was given back

        # play_clip = prepare_clip (checks, start image, mp4 path; no model call) + render_clip (the model), and the
        # request survives pickling (ZeroGPU sends it to another process)
        request = manager.prepare_clip("MOVE_FORWARD*3,TURN_LEFT", start_index=1, seed=1)
        assert request.num_actions == 4 and request.fps == 15 and os.path.getsize(request.path) == 0
        rendered = manager.render_clip(pickle.loads(pickle.dumps(request)))
        read = (lambda p: iio.imread(p, plugin="pyav")) if _has_pyav() else iio.imread
        assert rendered == request.path and np.array_equal(read(rendered), read(path))
        with pytest.raises(SpaceError, match="unknown action"):
            await manager.play_clip("JUMP*3")
        with pytest.raises(SpaceError, match="At most"):
            await manager.play_clip("NOOP*1000")
        await manager.shutdown()
        assert not os.path.exists(manager.clip_dir)

    run(main())
