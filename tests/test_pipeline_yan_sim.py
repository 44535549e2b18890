"""YanSimPipeline: the interactive contract, save/load, and bad input, on tiny random models."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler
from gymnasium import spaces

from diffusers_yan import AutoencoderKLYan, YanSimEnv, YanSimPipeline, YanSimState, YanSimUNetModel


def make_pipe(temporal_cache_size: int = 6, action_space=None, seed: int = 0) -> YanSimPipeline:
    torch.manual_seed(seed)
    vae = AutoencoderKLYan(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        spatial_compression_ratio=8,
        temporal_compression_ratio=2,
    )
    unet = YanSimUNetModel(
        sample_size=(4, 4),
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(True, True),
        attention_head_dim=8,
        norm_num_groups=4,
        action_space=action_space,
        action_embed_dim=16,
        temporal_cache_size=temporal_cache_size,
    )
    # random weights: make the zero-initialised branches non-zero so that actions and the past matter
    with torch.no_grad():
        for p in unet.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.2)
    scheduler = DDIMScheduler(
        prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True, clip_sample=False
    )
    pipe = YanSimPipeline(vae=vae.eval(), unet=unet.eval(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


def start_image(seed=0, size=(40, 52)):
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


ACTIONS = ["MOVE_FORWARD", "MOVE_FORWARD+TURN_LEFT", "ATTACK", "NOOP", "TURN_RIGHT", "MOVE_BACKWARD", "USE"]


def run(pipe, actions, image=None, state=None, seed=0, **kw):
    g = torch.Generator().manual_seed(seed) if image is not None else None
    return pipe(image=image, state=state, actions=actions, generator=g, output_type="np", **kw)


def test_output_shapes_and_types(pipe):
    h, w = pipe.resolution
    assert (h, w) == (32, 32) and pipe.frames_per_action == 2
    out = run(pipe, ACTIONS[:3], image=start_image())
    assert out.frames.shape == (1, 6, h, w, 3) and 0 <= out.frames.min() and out.frames.max() <= 1
    assert isinstance(out.state, YanSimState) and out.state.frame_index == 3
    pil = pipe(state=out.state, actions=["NOOP"], output_type="pil").frames
    assert len(pil) == 1 and len(pil[0]) == 2 and pil[0][0].size == (w, h)
    pt = pipe(state=out.state, actions=["NOOP"], output_type="pt").frames
    assert pt.shape == (1, 2, 3, h, w)
    lat = pipe(state=out.state, actions=["NOOP", "NOOP"], output_type="latent").frames
    assert lat.shape == (1, 4, 2, 4, 4)
    frames, state = pipe(state=out.state, actions=["NOOP"], output_type="np", return_dict=False)
    assert frames.shape == (1, 2, h, w, 3) and state.frame_index == 4


def test_chained_calls_equal_one_call(pipe):
    one = run(pipe, ACTIONS, image=start_image(), seed=3)
    chained, state = [], None
    for i, a in enumerate(ACTIONS):
        out = run(pipe, [a], image=start_image() if i == 0 else None, state=state, seed=3)
        chained.append(out.frames)
        state = out.state
    np.testing.assert_allclose(np.concatenate(chained, axis=1), one.frames, atol=1e-5)
    # and uneven chunks
    a = run(pipe, ACTIONS[:2], image=start_image(), seed=3)
    b = run(pipe, ACTIONS[2:], state=a.state)
    np.testing.assert_allclose(np.concatenate([a.frames, b.frames], axis=1), one.frames, atol=1e-5)


def test_future_actions_never_change_past_frames(pipe):
    base = run(pipe, ACTIONS, image=start_image(), seed=1).frames
    changed = run(pipe, ACTIONS[:4] + ["ATTACK+USE"] * 3, image=start_image(), seed=1).frames
    np.testing.assert_allclose(changed[:, : 4 * 2], base[:, : 4 * 2], atol=1e-6)
    assert np.abs(changed[:, 4 * 2 :] - base[:, 4 * 2 :]).max() > 1e-4


def test_different_actions_give_different_frames(pipe):
    fwd = run(pipe, ["MOVE_FORWARD"] * 3, image=start_image(), seed=0).frames
    turn = run(pipe, ["TURN_LEFT"] * 3, image=start_image(), seed=0).frames
    assert np.abs(fwd - turn).mean() > 1e-3
    other_seed = run(pipe, ["MOVE_FORWARD"] * 3, image=start_image(), seed=5).frames
    assert np.abs(fwd - other_seed).mean() > 1e-4


def test_state_is_never_modified_so_worlds_can_branch(pipe):
    out = run(pipe, ACTIONS[:2], image=start_image(), seed=2)
    first = run(pipe, ["TURN_LEFT"] * 2, state=out.state).frames
    again = run(pipe, ["TURN_LEFT"] * 2, state=out.state).frames  # same state, same actions: same frames
    np.testing.assert_array_equal(first, again)


def test_interleaved_worlds_do_not_disturb_each_other(pipe):
    alone_a = run(pipe, ACTIONS[:4], image=start_image(0), seed=0).frames
    alone_b = run(pipe, ACTIONS[3:7], image=start_image(1), seed=9).frames
    sa = sb = None
    fa, fb = [], []
    for i in range(4):
        oa = run(pipe, [ACTIONS[i]], image=start_image(0) if i == 0 else None, state=sa, seed=0)
        ob = run(pipe, [ACTIONS[3 + i]], image=start_image(1) if i == 0 else None, state=sb, seed=9)
        sa, sb = oa.state, ob.state
        fa.append(oa.frames)
        fb.append(ob.frames)
    np.testing.assert_allclose(np.concatenate(fa, 1), alone_a, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(fb, 1), alone_b, atol=1e-5)
    # the pipeline object holds no per-world data
    assert not any(isinstance(v, (YanSimState, torch.Generator)) for v in vars(pipe).values())


def _state_bytes(state: YanSimState) -> int:
    total = 0
    for value in vars(state).values():
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
            elif isinstance(v, (list, tuple)):
                stack.extend(v)
            elif isinstance(v, dict):
                stack.extend(v.values())
            elif hasattr(v, "__dict__"):
                stack.extend(vars(v).values())
    return total


def test_memory_stays_flat_over_hundreds_of_steps(pipe):
    out = run(pipe, ["MOVE_FORWARD"], image=start_image(), seed=0)
    sizes = []
    state = out.state
    for step in range(240):
        state = pipe(state=state, actions=[ACTIONS[step % len(ACTIONS)]], output_type="latent").state
        if step in (20, 239):
            sizes.append(_state_bytes(state))
    assert state.frame_index == 241
    assert state.kv_cache.num_frames <= pipe.unet.config.temporal_cache_size
    assert sizes[0] == sizes[1], sizes
    # decoding resumes after latent-only calls
    frames = pipe(state=state, actions=["NOOP"], output_type="np").frames
    assert frames.shape[1] == 2 and np.isfinite(frames).all()


def test_one_step_sampling_and_batches(pipe):
    out = pipe(image=start_image(), actions=ACTIONS[:2], num_inference_steps=1, output_type="np")
    assert out.frames.shape[1] == 4
    batch = pipe(image=[start_image(0), start_image(1)], actions=ACTIONS[:2], output_type="np")
    assert batch.frames.shape[0] == 2 and batch.state.batch_size == 2
    per_world = torch.stack(
        [pipe.action_space.encode_sequence(ACTIONS[:2]), pipe.action_space.encode_sequence(ACTIONS[2:4])]
    )
    batch2 = pipe(state=batch.state, actions=per_world, output_type="np")
    assert batch2.frames.shape[:2] == (2, 4)


def test_image_inputs_of_any_size_and_type(pipe):
    h, w = pipe.resolution
    arr = np.asarray(start_image(size=(90, 33)))
    as_tensor = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
    for image in (arr, arr.astype(np.float32) / 255, as_tensor, start_image().convert("L")):
        out = pipe(image=image, actions=["NOOP"], output_type="np")
        assert out.frames.shape == (1, 2, h, w, 3)


def test_callback_on_step_end(pipe):
    seen = []

    def cb(p, i, t, kw):
        seen.append((i, kw["latents"].shape[2]))
        return kw

    pipe(image=start_image(), actions=ACTIONS[:3], callback_on_step_end=cb, output_type="latent")
    # 3 priming calls (window 1, 2, 3 frames), then 3 emitting calls
    assert [i for i, _ in seen] == list(range(6))


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["vae"] == ["diffusers_yan.models.autoencoders.autoencoder_kl_yan", "AutoencoderKLYan"]
    assert index["unet"] == ["diffusers_yan.models.unets.unet_yan_sim", "YanSimUNetModel"]
    assert index["scheduler"][1] == "DDIMScheduler"
    loaded = YanSimPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.action_space == pipe.action_space
    a = run(pipe, ACTIONS[:3], image=start_image(), seed=4).frames
    b = run(loaded, ACTIONS[:3], image=start_image(), seed=4).frames
    np.testing.assert_allclose(a, b, atol=1e-6)
    # each model on its own
    unet = YanSimUNetModel.from_pretrained(tmp_path, subfolder="unet")
    vae = AutoencoderKLYan.from_pretrained(tmp_path, subfolder="vae")
    assert unet.config.temporal_cache_size == pipe.unet.config.temporal_cache_size
    assert vae.config.latent_channels == 4
    assert os.path.isfile(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    assert loaded.start_frames == []


def test_bad_input_gets_clear_errors(pipe):
    img = start_image()
    with pytest.raises(ValueError, match="`image`.*`state`"):
        pipe(actions=["NOOP"])
    out = run(pipe, ["NOOP"], image=img)
    with pytest.raises(ValueError, match="not both"):
        pipe(image=img, state=out.state, actions=["NOOP"])
    with pytest.raises(TypeError, match="`image`"):
        pipe(image="not an image", actions=["NOOP"])
    with pytest.raises(ValueError, match=r"`image`.*C in \(1, 3, 4\)"):
        pipe(image=np.zeros((16, 16, 5), np.uint8), actions=["NOOP"])
    with pytest.raises(ValueError, match=r"`image`.*\[C, H, W\]"):
        pipe(image=torch.zeros(2, 16, 16), actions=["NOOP"])
    with pytest.raises(TypeError, match="`actions"):
        pipe(image=img, actions=3.5)
    with pytest.raises(ValueError, match="`actions\\[1\\]`.*unknown action 'FLY'"):
        pipe(image=img, actions=["NOOP", "FLY"])
    with pytest.raises(ValueError, match="`actions` is None"):
        pipe(image=img)
    with pytest.raises(ValueError, match="`num_inference_steps`"):
        pipe(image=img, actions=["NOOP"], num_inference_steps=0)
    with pytest.raises(ValueError, match="`num_inference_steps`=2 differs"):
        pipe(state=out.state, actions=["NOOP"], num_inference_steps=2)
    with pytest.raises(TypeError, match="`state`"):
        pipe(state={"frame": 1}, actions=["NOOP"])
    with pytest.raises(ValueError, match="`output_type`"):
        pipe(image=img, actions=["NOOP"], output_type="gif")
    other = make_pipe(temporal_cache_size=3)
    with pytest.raises(ValueError, match="different config"):
        other(state=out.state, actions=["NOOP"])
    with pytest.raises(ValueError, match="`latents` must have shape"):
        pipe(image=img, actions=["NOOP"], latents=torch.zeros(1, 4, 1, 4, 4))


def test_custom_action_space_from_config():
    pipe = make_pipe(action_space={"buttons": ["JUMP", "RUN"], "axes": {"TURN_DELTA": [-30, 30]}})
    assert pipe.action_space.names == ("JUMP", "RUN", "TURN_DELTA")
    out = pipe(image=start_image(), actions=[{"JUMP": 1, "TURN_DELTA": 10.0}, "RUN"], output_type="np")
    assert out.frames.shape[1] == 4
    with pytest.raises(ValueError, match="MOVE_FORWARD"):
        pipe(image=start_image(), actions=["MOVE_FORWARD"])

    # its gym env: buttons and axes as a Dict space, whose samples step the world like any other action
    env = YanSimEnv(pipe, start_images=[start_image()])
    assert env.action_space["buttons"] == spaces.MultiBinary(2) and env.action_space["axes"].shape == (1,)
    env.reset(seed=0)
    sample = {"buttons": np.array([1, 0], np.int8), "axes": np.array([0.25], np.float32)}
    assert env.step(sample)[-1]["frames"].shape == (pipe.frames_per_action, 32, 32, 3)
    np.testing.assert_array_equal(env._encode(sample), pipe.action_space.encode([1.0, 0.0, 0.25]))


def test_gym_env(pipe):
    from gymnasium.utils.env_checker import check_env

    env = YanSimEnv(pipe, start_images=[start_image(0), start_image(1)], max_episode_steps=3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and info["frames"].shape == (2, 32, 32, 3)
    obs2, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs2.shape == obs.shape and reward == 0.0 and not terminated and not truncated
    env.step("MOVE_FORWARD+ATTACK")
    _, _, _, truncated, _ = env.step(["TURN_LEFT"])
    assert truncated
    # same seed, same world
    env2 = YanSimEnv(pipe, start_images=[start_image(0), start_image(1)])
    np.testing.assert_array_equal(env2.reset(seed=0)[0], env.reset(seed=0)[0])
    check_env(YanSimEnv(pipe, start_images=[start_image(0)]), skip_render_check=True)
    with pytest.raises(ValueError, match="No start image"):
        YanSimEnv(pipe).reset()


def test_action_guidance(pipe, tmp_path):
    img = start_image(3)
    plain = run(pipe, ACTIONS, image=img, seed=5).frames
    np.testing.assert_array_equal(run(pipe, ACTIONS, image=img, seed=5, guidance_scale=1.0).frames, plain)
    guided = run(pipe, ACTIONS, image=img, seed=5, guidance_scale=2.5).frames
    assert np.abs(guided - plain).max() > 1e-3
    # no button pressed: the conditional and the null branch are the same call, so guidance changes nothing (this
    # also checks that the doubled batch shares the past through the KV cache correctly)
    idle = run(pipe, ["NOOP"] * 5, image=img, seed=5).frames
    np.testing.assert_allclose(run(pipe, ["NOOP"] * 5, image=img, seed=5, guidance_scale=3.0).frames, idle, atol=1e-5)
    # the interactive contract holds with guidance: chained calls == one call; the future never changes the past
    first = run(pipe, ACTIONS[:3], image=img, seed=5, guidance_scale=2.5)
    rest = run(pipe, ACTIONS[3:], state=first.state, guidance_scale=2.5)
    np.testing.assert_allclose(np.concatenate([first.frames, rest.frames], axis=1), guided, atol=1e-5)
    other_future = run(pipe, ACTIONS[:3] + ["TURN_LEFT"] * 4, image=img, seed=5, guidance_scale=2.5).frames
    np.testing.assert_allclose(other_future[:, :6], guided[:, :6], atol=1e-5)
    # a batch of guided worlds == each world alone (same pre-drawn noise per world)
    noise = torch.randn(2, 4, 4 + 3, 4, 4, generator=torch.Generator().manual_seed(6))
    both = pipe(
        image=[start_image(3), start_image(4)],
        actions=ACTIONS[:4],
        latents=noise,
        output_type="np",
        guidance_scale=2.0,
    ).frames
    for i in range(2):
        alone = pipe(
            image=start_image(3 + i),
            actions=ACTIONS[:4],
            latents=noise[i : i + 1],
            output_type="np",
            guidance_scale=2.0,
        ).frames
        np.testing.assert_allclose(both[i : i + 1], alone, atol=1e-5)
    # guiding only each frame's last steps: every step == the default; fewer steps change the frames, idling still
    # gives the plain frames, and the contract holds
    np.testing.assert_allclose(
        run(pipe, ACTIONS, image=img, seed=5, guidance_scale=2.5, guidance_steps=4).frames, guided, atol=1e-6
    )
    late = run(pipe, ACTIONS, image=img, seed=5, guidance_scale=2.5, guidance_steps=2).frames
    assert np.abs(late - guided).max() > 1e-3 and np.abs(late - plain).max() > 1e-3
    idle_late = run(pipe, ["NOOP"] * 5, image=img, seed=5, guidance_scale=3.0, guidance_steps=1).frames
    np.testing.assert_allclose(idle_late, idle, atol=1e-5)
    first = run(pipe, ACTIONS[:2], image=img, seed=5, guidance_scale=2.5, guidance_steps=2)
    rest = run(pipe, ACTIONS[2:], state=first.state, guidance_scale=2.5, guidance_steps=2)
    np.testing.assert_allclose(np.concatenate([first.frames, rest.frames], axis=1), late, atol=1e-5)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="`guidance_steps` must be None"):
            pipe(image=img, actions=["NOOP"], guidance_scale=2.0, guidance_steps=bad)
    # a UNet whose config names another null action: guidance pushes away from that one, so idling changes too
    pipe.unet.register_to_config(null_action=[0.5] * pipe.action_space.dim)
    try:
        moved = run(pipe, ["NOOP"] * 5, image=img, seed=5, guidance_scale=3.0).frames
        assert np.abs(moved - idle).max() > 1e-3
        np.testing.assert_array_equal(run(pipe, ["NOOP"] * 5, image=img, seed=5).frames, idle)
    finally:
        pipe.unet.register_to_config(null_action=None)
    # the folder's default scale is saved in model_index.json and used when a call passes none
    pipe.save_pretrained(tmp_path)
    loaded = YanSimPipeline.from_pretrained(tmp_path, default_guidance_scale=2.5, default_guidance_steps=2)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.default_guidance_scale == 2.5
    loaded.save_pretrained(tmp_path / "guided")
    index = json.loads((tmp_path / "guided" / "model_index.json").read_text())
    assert index["default_guidance_scale"] == 2.5 and index["default_guidance_steps"] == 2
    reloaded = YanSimPipeline.from_pretrained(tmp_path / "guided")
    reloaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(run(reloaded, ACTIONS, image=img, seed=5).frames, late, atol=1e-5)
    np.testing.assert_allclose(run(reloaded, ACTIONS, image=img, seed=5, guidance_steps=4).frames, guided, atol=1e-5)
    for bad in (0.5, float("nan"), "2", True):
        with pytest.raises(ValueError, match="`guidance_scale` must be a finite number >= 1"):
            pipe(image=img, actions=["NOOP"], guidance_scale=bad)
    with pytest.raises(ValueError, match="`default_guidance_scale`"):
        YanSimPipeline(vae=pipe.vae, unet=pipe.unet, scheduler=pipe.scheduler, default_guidance_scale=0)
