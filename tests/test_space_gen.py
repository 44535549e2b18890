"""Yan-Gen in the Space: the gym env over a causal YanGenPipeline (`YanGenEnv`), then Yan-Gen sessions in the
session manager, the WebSocket and a real browser (prompt box, prompt changes mid-play, upload, record, queue).

Tiny random Yan-Gen components from tests/test_pipeline_yan_gen.py (causal, one latent frame per block: a world
starts with 1 video frame, then every step is a block of 4).
"""

import asyncio
import json
import os
import time

import numpy as np
import PIL.Image
import pytest
import torch
from gymnasium import spaces


pytest.importorskip("fastapi", reason="the Space needs the [space] extra (fastapi via gradio)")

from diffusers_yan import YanGenEnv, YanGenPipeline  # noqa: E402
from diffusers_yan.space import SessionManager, SpaceConfig, SpaceError, build_app, load_manager  # noqa: E402
from diffusers_yan.space.sessions import MAX_PROMPT_CHARS  # noqa: E402

from .test_pipeline_yan_gen import _components, causal_i2v, start_image  # noqa: E402, F401  (module fixtures)
from .test_space_app import browser, serving  # noqa: E402, F401  (browser: a fixture)
from .test_space_sessions import (  # noqa: E402, F401  (model_dir, pipe: the tiny Yan-Sim model's fixtures)
    Inbox,
    _has_pyav,
    model_dir,
    pipe,
    png_bytes,
    run,
    wait_for,
)


# the tiny action space (LEFT, RIGHT, JUMP) has no default key bindings: visitors bind their own
BINDINGS = {"KeyA": "LEFT", "KeyD": "RIGHT", "Space": "JUMP"}


def make_env(pipeline, **kwargs):
    kwargs = {"height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 16, **kwargs}
    return YanGenEnv(pipeline, **kwargs)


def rollout(env, actions, seed=0):
    """Frames of reset + one step per action, one array per call."""
    frames = [env.reset(seed=seed)[1]["frames"]]
    return frames + [env.step(action)[-1]["frames"] for action in actions]


def gen_config(**kwargs):
    # uncapped frame pacing (tests should not wait on it); the tiny model makes 32x32 frames
    return SpaceConfig(**{"max_fps": 0, "gen_resolution": (32, 32), **kwargs})


def text_steered_components():
    """Tiny random causal I2V components whose prompt visibly steers the frames at the Space's 512 text tokens.

    With random weights a prompt hardly shows in uint8 frames: its ~4 tokens get ~1% of the cross-attention next to
    ~508 padding tokens (whose keys and values come from biases). Zeroing those biases and sharpening the text
    attention lets the prompt through about as much as the start image or the noise seed.
    """
    components = _components(i2v=True, causal=True)
    transformer = components["transformer"]
    with torch.no_grad():
        transformer.condition_embedder.text_embedder.linear_1.bias.zero_()
        transformer.condition_embedder.text_embedder.linear_2.bias.zero_()
        for block in transformer.blocks:
            block.attn2.to_k.bias.zero_()
            block.attn2.to_v.bias.zero_()
            block.attn2.norm_k.weight.mul_(10.0)
            block.attn2.to_v.weight.mul_(3.0)
    return components


@pytest.fixture(scope="module")
def gen_model_dir(tmp_path_factory):
    """The tiny image-to-video model saved with two bundled start frames, as `yan play --model PATH` loads it."""
    path = tmp_path_factory.mktemp("space_gen") / "tiny-gen"
    YanGenPipeline(**text_steered_components()).save_pretrained(path)
    os.makedirs(path / "start_frames")
    rng = np.random.default_rng(1)
    for i in range(2):
        PIL.Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path / "start_frames" / f"{i}.png")
    return str(path)


@pytest.fixture(scope="module")
def gen_pipe(gen_model_dir):
    return YanGenPipeline.from_pretrained(gen_model_dir)


@pytest.fixture(scope="module")
def t2v_pipe():
    t2v = YanGenPipeline(**_components(causal=True))
    t2v.set_progress_bar_config(disable=True)
    return t2v


# ---------------------------------------------------------------------------------------------------- the env
def test_env_reset_step_shapes_and_determinism(causal_i2v, start_image):  # noqa: F811
    env = make_env(causal_i2v, prompt="a cave", start_images=[start_image])
    assert env.action_space == spaces.MultiBinary(3) and env.frames_per_step == 4 and env.takes_image
    obs, info = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert info["frames"].shape == (1, 32, 32, 3) and info["frame_index"] == 1 and info["prompt"] == "a cave"
    actions = ["LEFT", "RIGHT+JUMP", np.array([1, 0, 1])]  # names, a held combination, a multi-hot vector
    frames = [info["frames"]]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert info["frames"].shape == (4, 32, 32, 3) and info["frames"].dtype == np.uint8
        assert np.array_equal(obs, info["frames"][-1]) and (reward, terminated, truncated) == (0.0, False, False)
        frames.append(info["frames"])
    assert info["frame_index"] == 4 and np.array_equal(env.render(), obs)

    # the same seed and actions replay the same world, also in another env on the same pipeline
    other = make_env(causal_i2v, prompt="a cave", start_images=[start_image])
    np.testing.assert_array_equal(np.concatenate(rollout(other, actions)), np.concatenate(frames))
    # another seed is another world
    assert not np.array_equal(np.concatenate(rollout(other, actions, seed=1)), np.concatenate(frames))
    # a start image of another aspect ratio is center-cropped to the world's size
    wide = PIL.Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 90, 3), dtype=np.uint8))
    assert other.reset(seed=0, options={"image": wide, "action": "JUMP"})[0].shape == (32, 32, 3)


def test_env_set_prompt_changes_later_frames_never_earlier(causal_i2v, start_image):  # noqa: F811
    def play(new_prompt=None):
        # with guidance: the new prompt's negative states are re-encoded too
        env = make_env(
            causal_i2v, prompt="a cave", negative_prompt="blurry", guidance_scale=2.0, start_images=[start_image]
        )
        before = rollout(env, ["LEFT", "LEFT"])
        if new_prompt is not None:
            env.set_prompt(new_prompt)
        after = [env.step("RIGHT")[-1]["frames"]]
        embeds = env.state.prompt_embeds
        after.append(env.step("RIGHT")[-1]["frames"])
        assert env.state.prompt_embeds is embeds  # encoded once for the block after the change, then kept
        return env, np.concatenate(before), np.concatenate(after)

    same, same_before, same_after = play()
    changed, changed_before, changed_after = play("the cave floods")
    np.testing.assert_array_equal(changed_before, same_before)
    for block in range(2):  # both blocks after the change differ
        assert not np.array_equal(changed_after[4 * block : 4 * block + 4], same_after[4 * block : 4 * block + 4])
    assert changed.prompt == "the cave floods" and same.prompt == "a cave"
    assert not torch.equal(changed.state.prompt_embeds, same.state.prompt_embeds)

    # before a world exists, set_prompt chooses the prompt reset starts from
    env = make_env(
        causal_i2v, prompt="something else", negative_prompt="blurry", guidance_scale=2.0, start_images=[start_image]
    )
    env.set_prompt("a cave")
    np.testing.assert_array_equal(env.reset(seed=0)[1]["frames"], same_before[:1])


def test_env_text_to_video_and_action_free_models(t2v_pipe, start_image):  # noqa: F811
    env = make_env(t2v_pipe, prompt="a cave")
    assert not env.takes_image
    assert env.reset(seed=0)[1]["frames"].shape == (1, 32, 32, 3)  # from the prompt alone
    with pytest.raises(ValueError, match="text-to-video"):
        env.reset(seed=0, options={"image": start_image})

    free = make_env(YanGenPipeline(**_components(causal=True, actions=False)))
    assert free.action_space == spaces.Discrete(1)
    free.reset(seed=0)
    assert free.step(None)[-1]["frames"].shape == (4, 32, 32, 3)
    with pytest.raises(ValueError, match="no action branch"):
        free.step("LEFT")


def test_env_bad_input_gets_clear_errors(causal_i2v, start_image):  # noqa: F811
    with pytest.raises(TypeError, match="`pipeline` must be a YanGenPipeline"):
        YanGenEnv(object())
    with pytest.raises(ValueError, match="bidirectional"):
        make_env(YanGenPipeline(**_components()))
    with pytest.raises(ValueError, match="`height` must be a positive multiple of 16"):
        make_env(causal_i2v, height=30)
    with pytest.raises(ValueError, match="`prompt` must be a string"):
        make_env(causal_i2v, prompt=3)
    env = make_env(causal_i2v, start_images=[])
    with pytest.raises(RuntimeError, match="reset"):
        env.step("LEFT")
    with pytest.raises(ValueError, match="No start image"):
        env.reset(seed=0)
    with pytest.raises(ValueError, match="unknown keys"):
        env.reset(options={"image": start_image, "seed": 1})
    with pytest.raises(ValueError, match=r"`options\['prompt'\]` must be a string"):
        env.reset(options={"image": start_image, "prompt": None})
    env.reset(seed=0, options={"image": start_image})
    with pytest.raises(ValueError, match="unknown action 'FLY'"):
        env.step("FLY")
    with pytest.raises(ValueError, match="`prompt` must be a string"):
        env.set_prompt(["a", "list"])
    assert env.prompt == ""  # a refused prompt changes nothing


# ---------------------------------------------------------------------------------------------------- the Space
def test_public_config_tells_the_page_the_model_kind(pipe, gen_pipe, t2v_pipe):  # noqa: F811
    manager = SessionManager({"tiny-sim": pipe, "tiny-gen": gen_pipe, "tiny-t2v": t2v_pipe}, gen_config())
    config = manager.public_config()
    sim, gen, t2v = config["models"]
    assert (sim["kind"], gen["kind"], t2v["kind"]) == ("yan-sim", "yan-gen", "yan-gen")
    assert config["max_prompt_chars"] == MAX_PROMPT_CHARS
    assert gen["buttons"] == ["LEFT", "RIGHT", "JUMP"] and (gen["height"], gen["width"]) == (32, 32)
    assert gen["frames_per_action"] == 4 and gen["fps"] == 16  # one action per block of 4 frames
    assert gen["takes_image"] and gen["num_start_frames"] == 2  # image-to-video, with bundled start frames
    assert not t2v["takes_image"] and t2v["num_start_frames"] == 0  # text-to-video: starts from the prompt
    assert sim["takes_image"] and sim["frames_per_action"] == pipe.frames_per_action

    # a session's status tells its kind; only Yan-Gen sessions have a prompt
    sim_session, gen_session = manager.create_session("tiny-sim"), manager.create_session("tiny-gen")
    assert sim_session.snapshot()["kind"] == "yan-sim" and "prompt" not in sim_session.snapshot()
    assert gen_session.snapshot()["kind"] == "yan-gen" and gen_session.snapshot()["prompt"] == ""
    assert isinstance(gen_session.env, YanGenEnv) and gen_session.env.pipeline is gen_pipe
    with pytest.raises(SpaceError, match="Yan-Sim model: it takes no prompt"):
        manager.set_prompt(sim_session.id, "a cave")

    # models the Space cannot play are refused when the server starts, saying why
    with pytest.raises(ValueError, match="no action branch"):
        SessionManager({"free": YanGenPipeline(**_components(causal=True, actions=False))}, gen_config())
    with pytest.raises(ValueError, match="'wan' cannot be played: .*bidirectional"):
        SessionManager({"wan": YanGenPipeline(**_components())}, gen_config())
    with pytest.raises(ValueError, match="`height` must be a positive multiple of 16"):
        SessionManager({"tiny-gen": gen_pipe}, gen_config(gen_resolution=(30, 32)))
    with pytest.raises(TypeError, match="YanSimPipeline or a YanGenPipeline"):
        SessionManager({"x": object()})
    run(manager.shutdown())


def test_gen_session_keys_step_upload_reset_record(gen_pipe, tmp_path):
    import imageio.v3 as iio

    async def main():
        manager = SessionManager({"tiny-gen": gen_pipe}, gen_config(max_recorded_frames=100))
        session = manager.create_session()
        inbox = Inbox()
        manager.attach(session.id, inbox)
        await manager.handle(session.id, {"type": "bindings", "bindings": BINDINGS})
        await manager.handle(session.id, {"type": "prompt", "prompt": "a cave"})
        assert inbox.messages[-1]["prompt"] == "a cave" and "when the world starts" in inbox.messages[-1]["message"]

        # start: a world from the first bundled start frame and the prompt; its first block is one frame
        await manager.handle(session.id, {"type": "reset", "seed": 0})
        await wait_for(lambda: len(inbox.frames) == 1)
        assert session.frame_count == 1 and session.env.prompt == "a cave" and inbox.frames[0][:2] == b"\xff\xd8"
        first = session.last_frames[-1]

        # keys and on-screen buttons: one action per block, all 4 frames of the block sent after one meta
        manager.set_keys(session.id, ["KeyA", "Space", "F13"])
        await manager.step(session.id)
        assert session.last_action == ["LEFT", "JUMP"] and session.frame_count == 5
        meta = inbox.of_type("frame")[-1]
        assert meta["n"] == 4 and meta["frame_index"] == 5 and len(inbox.frames) == 5
        manager.set_keys(session.id, [], ["RIGHT"])
        await manager.step(session.id)
        assert session.last_action == ["RIGHT"] and session.frame_count == 9

        # record: every frame shown, as an mp4 at Wan's 16 frames/s
        path = await manager.export_recording(session.id)
        frames = iio.imread(path, plugin="pyav") if _has_pyav() else iio.imread(path)
        assert frames.shape[0] == 9 == len(session.recording)
        os.remove(path)

        # reset replays the same world from the same start, seed, prompt and (no) keys; another start frame, an
        # upload or another prompt is another world (compared over reset + one block: a random model's first
        # frame hardly depends on anything)
        manager.set_keys(session.id, [], [])

        async def world(start, prompt="a cave"):
            await manager.handle(session.id, {"type": "prompt", "prompt": prompt})
            await manager.reset(session.id, start=start, seed=0)
            await manager.step(session.id)
            assert session.frame_count == 5 == len(session.recording)  # a reset starts the recording over
            return list(session.recording)

        bundled = {"kind": "bundled", "index": 0}
        cave = await world(bundled)
        assert cave[0] == first and await world(bundled) == cave
        assert await world({"kind": "bundled", "index": 1}) != cave
        # an uploaded start image (any size and format) starts an image-to-video world too
        wide = PIL.Image.fromarray(np.random.default_rng(3).integers(0, 255, (90, 300, 3), dtype=np.uint8))
        manager.set_start_image(session.id, png_bytes(wide, "JPEG"))
        assert await world({"kind": "upload"}) != cave and session.use_upload
        assert await world(bundled, prompt="a sunny meadow") != cave and session.env.prompt == "a sunny meadow"

        # clip mode: one block per action, from the prompt
        clip = await manager.play_clip("LEFT*2,JUMP", seed=0, prompt="a cave")
        frames = iio.imread(clip, plugin="pyav") if _has_pyav() else iio.imread(clip)
        assert frames.shape[0] == 1 + 4 * 2
        with pytest.raises(SpaceError, match="at most"):
            await manager.play_clip("LEFT", prompt="x" * (MAX_PROMPT_CHARS + 1))
        await manager.shutdown()

    run(main())


def test_gen_prompt_changed_mid_play_applies_from_the_next_block(gen_pipe):
    """A world playing on its own gets a new prompt: compared with the same world without the change, every frame
    up to the block in flight is the same, and the frames from the next block on differ."""

    async def main():
        manager = SessionManager({"tiny-gen": gen_pipe}, gen_config(max_sessions=2))
        changed, same = manager.create_session(), manager.create_session()
        for session in (changed, same):
            manager.set_prompt(session.id, "a cave")
            await manager.reset(session.id, seed=0)

        await manager.play(changed.id)
        await wait_for(lambda: changed.frame_count >= 9)
        await manager.handle(changed.id, {"type": "prompt", "prompt": "the cave floods"})
        changed_at = changed.frame_count  # a block may be in flight: it keeps the old prompt
        await wait_for(lambda: changed.frame_count >= changed_at + 12)
        await manager.pause(changed.id)

        while same.frame_count < changed.frame_count:  # the same world, stepped with the same (no) keys
            await manager.step(same.id)
        a, b = list(changed.recording), list(same.recording)
        first_difference = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        assert changed_at <= first_difference <= changed_at + 4  # the next block (at most one was in flight)
        assert (first_difference - 1) % 4 == 0  # ... from its first frame on (blocks start at frames 1, 5, 9, ...)
        assert changed.env.prompt == "the cave floods" and changed.prompt == "the cave floods"
        assert not changed.prompt_pending
        await manager.shutdown()

    run(main())


def test_gen_bad_prompts_are_refused_with_a_message(gen_pipe):
    from fastapi.testclient import TestClient

    manager = SessionManager({"tiny-gen": gen_pipe}, gen_config())
    with TestClient(build_app(manager, clip_mode=True)) as client:
        assert client.get("/api/config").json()["models"][0]["kind"] == "yan-gen"
        assert 'id="prompt-box"' in client.get("/").text
        with client.websocket_connect("/ws") as ws:
            ws.send_text(json.dumps({"type": "hello", "model": "tiny-gen"}))
            hello = ws.receive_json()
            assert hello["kind"] == "yan-gen" and hello["prompt"] == ""
            session = manager.sessions[hello["session"]]
            for bad, match in [
                (5, "must be text, got int"),
                (None, "must be text, got NoneType"),
                (["a cave"], "must be text, got list"),
                ("x" * (MAX_PROMPT_CHARS + 1), f"at most {MAX_PROMPT_CHARS}"),
            ]:
                ws.send_text(json.dumps({"type": "prompt", "prompt": bad}))
                reply = ws.receive_json()
                assert reply["type"] == "error" and match in reply["message"]
            assert session.prompt == ""  # refused prompts change nothing

            ws.send_text(json.dumps({"type": "prompt", "prompt": "a cave"}))
            assert ws.receive_json()["prompt"] == "a cave"
            # a step streams its whole block: the meta, then its n JPEG frames (1 for a new world, then 4)
            for n in (1, 4):
                ws.send_text(json.dumps({"type": "step"}))
                meta = ws.receive_json()
                assert meta["type"] == "frame" and meta["n"] == n
                assert all(ws.receive_bytes()[:2] == b"\xff\xd8" for _ in range(n))
            assert session.env.prompt == "a cave"


def test_gen_text_to_video_queue_and_idle_cleanup(t2v_pipe):
    async def main():
        manager = SessionManager({"tiny-t2v": t2v_pipe}, gen_config(max_sessions=1))
        first, second = manager.create_session(), manager.create_session()
        # a text-to-video model takes no start image: uploads are refused with a message, the prompt starts worlds
        with pytest.raises(SpaceError, match="text-to-video"):
            manager.set_start_image(first.id, png_bytes(PIL.Image.new("RGB", (32, 32))))
        with pytest.raises(SpaceError, match="text-to-video"):
            await manager.reset(first.id, start={"kind": "upload"})
        manager.set_prompt(first.id, "a cave")
        await manager.reset(first.id, seed=0)
        assert first.frame_count == 1

        # one play slot: the second player waits with a visible position until the first pauses
        inbox = Inbox()
        manager.attach(second.id, inbox)
        await manager.play(first.id)
        await manager.play(second.id)
        await wait_for(lambda: first.frame_count >= 5 and manager.slots.position(second.id) == 1)
        assert second.status == "queued" and inbox.of_type("status")[-1]["queue_position"] == 1
        await manager.pause(first.id)
        await wait_for(lambda: second.frame_count >= 5)
        await manager.pause(second.id)
        assert manager.slots.holders == set() and first.status == second.status == "paused"

        # idle worlds are freed
        assert sorted(manager.cleanup_idle(now=time.monotonic() + 1e6)) == sorted([first.id, second.id])
        assert first.env.state is None and not manager.sessions
        await manager.shutdown()

    run(main())


def test_load_manager_detects_the_pipeline_class(model_dir, gen_model_dir, tmp_path, capsys):  # noqa: F811
    from diffusers_yan.cli import main

    manager = load_manager([model_dir, gen_model_dir], gen_config())
    assert [info["kind"] for info in manager.public_config()["models"]] == ["yan-sim", "yan-gen"]
    assert isinstance(manager.pipelines["tiny-gen"], YanGenPipeline)
    asyncio.run(manager.shutdown())

    other = tmp_path / "wan"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ValueError, match="holds a WanPipeline"):
        load_manager([str(other)])
    assert main(["play", "--model", str(other)]) == 2
    assert "WanPipeline" in capsys.readouterr().err
    assert main(["play", "--model", gen_model_dir, "--gen-resolution", "30x32"]) == 2
    assert "multiple of 16" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_browser_prompt_box_for_yan_gen(gen_pipe, browser):  # noqa: F811
    """A real browser on a Yan-Gen model: the prompt box is there, a typed prompt starts the world, a new one
    (Enter) applies from the next block, a refused one shows the server's message."""
    manager = SessionManager({"tiny-gen": gen_pipe}, gen_config(max_fps=15))
    with serving(manager) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("window.yan && window.yan.sessionId", timeout=20_000)
        assert page.is_visible("#prompt-box") and page.text_content("#brand") == "Yan-Gen"
        session = manager.sessions[page.evaluate("window.yan.sessionId")]

        page.fill("#prompt", "a cave")  # typed, not applied yet: it goes with the next command
        page.click("#step")
        page.wait_for_function("Number(document.getElementById('frame-counter').textContent) === 1", timeout=20_000)
        assert session.env.prompt == "a cave"

        page.fill("#prompt", "the cave floods")
        page.press("#prompt", "Enter")
        page.wait_for_function("document.getElementById('message').textContent.includes('next block')")
        assert session.prompt_pending and session.env.prompt == "a cave"  # applied by the next block, not before
        page.click("#step")
        page.wait_for_function("Number(document.getElementById('frame-counter').textContent) === 5", timeout=20_000)
        assert session.env.prompt == "the cave floods" and session.held_keys == frozenset()  # typing did not steer

        page.evaluate("window.yan.ws.send(JSON.stringify({type: 'prompt', prompt: 42}))")
        page.wait_for_function("document.getElementById('message').classList.contains('error')", timeout=20_000)
        assert "must be text" in page.text_content("#message")
        assert not errors, errors
        page.close()


def test_clip_mode_blocks_for_yan_gen_models(pipe, gen_pipe, t2v_pipe):  # noqa: F811
    """The Gradio clip mode (plain path) on Yan-Sim, image-to-video and text-to-video Yan-Gen models: the prompt box
    and the start inputs follow the chosen model, and a Yan-Gen clip follows its prompt."""
    import gradio as gr
    import imageio.v3 as iio

    from diffusers_yan.space.clip import CLIP_API_NAME, DEFAULT_CLIP_ACTIONS, build_clip_blocks

    manager = SessionManager({"tiny-sim": pipe, "tiny-gen": gen_pipe, "tiny-t2v": t2v_pipe}, gen_config())
    blocks = build_clip_blocks(manager, zerogpu=False)
    shown = {c.elem_id: c for c in blocks.blocks.values() if str(getattr(c, "elem_id", "")).startswith("clip-")}
    # the first model is Yan-Sim: no prompt box; its start frames, upload and buttons
    assert not shown["clip-prompt"].visible and shown["clip-start"].visible and shown["clip-upload"].visible
    assert shown["clip-start"].value == "start frame 1" and "Buttons: MOVE_FORWARD" in shown["clip-actions"].info

    (change,) = [i for i, fn in blocks.fns.items() if fn.name == "on_model_change"]

    def choose(model, actions):
        start, upload, prompt, actions = blocks(model, actions, fn_index=change)
        return start, upload, prompt, actions

    # image-to-video Yan-Gen: the prompt box, its two start frames and the upload; its buttons, and a default
    # clip made of them (the Doom actions typed for Yan-Sim are not its buttons)
    start, upload, prompt, actions = choose("tiny-gen", DEFAULT_CLIP_ACTIONS)
    assert prompt["visible"] and upload["visible"] and start["visible"] and start["value"] == "start frame 1"
    assert [choice[0] for choice in start["choices"]] == ["start frame 1", "start frame 2"]
    assert actions["value"] == "LEFT*2,RIGHT*2,JUMP*2"
    assert "Buttons: LEFT, RIGHT, JUMP." in actions["info"] and "block of 4 frames" in actions["info"]
    # text-to-video Yan-Gen: the prompt box, no start frame or upload; typed actions it takes are kept
    start, upload, prompt, actions = choose("tiny-t2v", "JUMP*3")
    assert prompt["visible"] and not upload["visible"] and not start["visible"] and start["value"] is None
    assert actions["value"] == "JUMP*3"
    # back to Yan-Sim: no prompt box
    start, upload, prompt, actions = choose("tiny-sim", "JUMP*3")
    assert not prompt["visible"] and upload["visible"] and start["visible"]
    assert actions["value"] == DEFAULT_CLIP_ACTIONS and "Buttons: MOVE_FORWARD" in actions["info"]

    def clip(model, start, prompt, actions="LEFT,JUMP"):
        output = blocks(model, start, None, actions, 0, prompt, api_name=CLIP_API_NAME)
        path = output["video"] if isinstance(output, dict) else output
        path = path["path"] if isinstance(path, dict) else path
        return (iio.imread(path, plugin="pyav") if _has_pyav() else iio.imread(path)).astype(float)

    # a Yan-Gen clip follows its prompt: the same prompt replays the same video, another one another video (in the
    # block after the first frame, which starts from the start image; by about as much as another seed: ~1.2 of 255
    # on average, up to ~11, through the mp4's compression)
    cave = clip("tiny-gen", "start frame 1", "a cave")
    assert cave.shape == (1 + 4, 32, 32, 3)
    np.testing.assert_array_equal(clip("tiny-gen", "start frame 1", "a cave"), cave)
    meadow = clip("tiny-gen", "start frame 1", "a sunny meadow")
    assert np.abs(meadow[1:] - cave[1:]).mean() > 0.5 and np.abs(meadow[1:] - cave[1:]).max() > 5
    # text-to-video: no start frame needed; Yan-Sim: the (hidden) prompt box is ignored
    assert clip("tiny-t2v", None, "a cave").shape == (1 + 4, 32, 32, 3)
    assert clip("tiny-sim", "start frame 1", "left over", "MOVE_FORWARD").shape[0] == pipe.frames_per_action
    with pytest.raises(gr.Error, match=f"at most {MAX_PROMPT_CHARS}"):
        clip("tiny-gen", "start frame 1", "x" * (MAX_PROMPT_CHARS + 1))
    run(manager.shutdown())
