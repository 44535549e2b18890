"""Tests for `YanSimUNetModel`: shapes, per-frame timesteps, causality, KV-cache equivalence and bounds, the text
branch, save/load, gradient checkpointing, attention processors and input validation. Tiny configs only."""

import dataclasses
import inspect

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from diffusers_yan import ActionSpace, YanSimUNetModel, YanSimUNetOutput
from diffusers_yan.models.unets.unet_yan_sim import (
    YanSimTemporalAttnProcessor2_0,
    apply_frame_rotary_embedding,
    get_causal_frame_mask,
    get_frame_rotary_embedding,
)


TINY = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "attention_levels": (True, True),
    "attention_head_dim": 16,
    "norm_num_groups": 8,
    "action_embed_dim": 32,
    "temporal_cache_size": 8,
}
ATOL = 1e-5


def make_model(**overrides) -> YanSimUNetModel:
    """A tiny model whose zero-initialised residual branches (temporal, text) are given random weights, so frames
    really interact and every test below has something to detect."""
    torch.manual_seed(0)
    model = YanSimUNetModel(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ("attn_temporal.to_out" in name or "attn_text.to_out" in name) and not param.any():
                param.normal_(std=0.2)
    return model


@pytest.fixture(scope="module")
def model():
    return make_model()


def inputs(model, batch_size=1, num_frames=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch_size, model.config.in_channels, num_frames, size, size, generator=g)
    timestep = torch.randint(0, 1000, (batch_size, num_frames), generator=g)
    actions = torch.randint(0, 2, (batch_size, num_frames, model.action_dim), generator=g).float()
    return sample, timestep, actions


def frame_diff(a, b):
    """Max abs difference per frame, [frames]."""
    return (a - b).abs().amax(dim=(0, 1, 3, 4))


# ------------------------------------------------------------------------------------------------ basics


def test_config_defaults_are_paper_scale():
    params = inspect.signature(YanSimUNetModel.__init__).parameters
    defaults = {k: v.default for k, v in params.items() if k != "self"}
    assert defaults["in_channels"] == defaults["out_channels"] == 16
    assert defaults["block_out_channels"] == (320, 640, 1280, 1280)
    assert defaults["layers_per_block"] == 2
    assert defaults["attention_levels"] == (True, True, True, False)
    assert defaults["action_embed_dim"] == 768 and defaults["num_action_tokens"] == 1
    assert defaults["text_cross_attention"] is False and defaults["temporal_cache_size"] == 16
    with torch.device("meta"):  # paper-scale shapes without allocating memory
        big = YanSimUNetModel()
    assert big.action_dim == 8 and big.config.action_space == ActionSpace().to_dict()
    assert 500e6 < sum(p.numel() for p in big.parameters()) < 2e9


def test_output_shape_and_tuple(model):
    sample, timestep, actions = inputs(model, batch_size=2, num_frames=3)
    with torch.no_grad():
        out = model(sample, timestep, actions=actions)
        tup = model(sample, timestep, actions=actions, return_dict=False)
    assert isinstance(out, YanSimUNetOutput)
    assert out.sample.shape == (2, model.config.out_channels, 3, 8, 8)
    assert out.kv_cache is None and tup[1] is None
    torch.testing.assert_close(out.sample, tup[0])


def test_timestep_forms_and_no_actions(model):
    sample, _, _ = inputs(model, batch_size=2, num_frames=3)
    with torch.no_grad():
        ref = model(sample, torch.full((2, 3), 500)).sample
        for t in (500, 500.0, torch.tensor(500), torch.tensor([500, 500]), torch.tensor([500]), [[500] * 3] * 2):
            torch.testing.assert_close(model(sample, t).sample, ref, atol=ATOL, rtol=0)
        zeros = torch.zeros(2, 3, model.action_dim)
        torch.testing.assert_close(model(sample, 500, actions=zeros).sample, ref, atol=ATOL, rtol=0)


def test_per_frame_timesteps_change_only_the_right_frames():
    sample, timestep, actions = inputs(make_model(), num_frames=4)
    other = timestep.clone()
    other[0, 2] = (timestep[0, 2] + 300) % 1000
    # fresh init: temporal attention starts as a zero residual, so only frame 2 changes
    fresh = YanSimUNetModel(**TINY).eval()
    with torch.no_grad():
        d = frame_diff(fresh(sample, timestep, actions).sample, fresh(sample, other, actions).sample)
    assert d[2] > 1e-4 and d[[0, 1, 3]].max() <= ATOL
    # trained-like model: frames 0-1 (before) never change, frame 2 does
    trained = make_model()
    with torch.no_grad():
        d = frame_diff(trained(sample, timestep, actions).sample, trained(sample, other, actions).sample)
    assert d[:2].max() <= ATOL and d[2] > 1e-4


@pytest.mark.parametrize("what", ["sample", "action"])
def test_causality(model, what):
    sample, timestep, actions = inputs(model, num_frames=5)
    k = 2
    sample2, actions2 = sample.clone(), actions.clone()
    if what == "sample":
        sample2[:, :, k] += torch.randn_like(sample2[:, :, k])
    else:
        actions2[:, k] = 1 - actions2[:, k]
    with torch.no_grad():
        d = frame_diff(model(sample, timestep, actions).sample, model(sample2, timestep, actions2).sample)
    assert d[:k].max() <= ATOL, d
    assert d[k] > 1e-4 and d[k + 1 :].min() > 1e-6, d  # the change reaches frame k and, through time, later frames


# ----------------------------------------------------------------------------------------------- KV cache


def test_cache_equivalence_one_call_vs_chunks(model):
    sample, timestep, actions = inputs(model, batch_size=2, num_frames=7)
    timestep[:, :5] = 0  # cached frames are clean; the caller guarantees it
    with torch.no_grad():
        full = model(sample, timestep, actions).sample
        cache, outs = None, []
        for start, stop in [(0, 3), (3, 5), (5, 7)]:
            out = model(
                sample[:, :, start:stop],
                timestep[:, start:stop],
                actions[:, start:stop],
                kv_cache=cache,
                cache_frames=stop - start if stop <= 5 else 0,
            )
            cache = out.kv_cache
            outs.append(out.sample)
    assert cache.num_frames == 5
    torch.testing.assert_close(torch.cat(outs, dim=2), full, atol=ATOL, rtol=0)


def test_cache_batch_repeat_and_select(model):
    """repeat_batch/select_batch re-slice a cache along the batch: a world's slice continues exactly like that world
    continued alone (what guided sampling relies on when it doubles the batch)."""
    sample, timestep, actions = inputs(model, batch_size=2, num_frames=5)
    timestep[:, :3] = 0
    with torch.no_grad():
        cache = model(sample[:, :, :3], timestep[:, :3], actions[:, :3], cache_frames=3).kv_cache
        doubled = cache.repeat_batch(2)
        assert doubled.batch_size == 4 and doubled.num_frames == 3
        for k, k2 in zip(cache.keys, doubled.keys):
            torch.testing.assert_close(k2, torch.cat([k, k]))
        both = model(sample[:, :, 3:], timestep[:, 3:], actions[:, 3:], kv_cache=cache).sample
        for i in range(2):
            one = cache.select_batch(i, i + 1)
            assert one.batch_size == 1
            alone = model(sample[i : i + 1, :, 3:], timestep[i : i + 1, 3:], actions[i : i + 1, 3:], kv_cache=one)
            torch.testing.assert_close(alone.sample, both[i : i + 1], atol=ATOL, rtol=0)
        torch.testing.assert_close(doubled.select_batch(2, 4).keys[0], cache.keys[0])
    with pytest.raises(ValueError, match="`start`=1, `stop`=1"):
        cache.select_batch(1, 1)
    with pytest.raises(ValueError, match="`times`"):
        cache.repeat_batch(0)


def test_null_action_config():
    assert torch.equal(make_model().null_action_vector(), torch.zeros(8))
    unet = make_model(null_action=[0.25] * 8)
    assert unet.config.null_action == [0.25] * 8 and torch.equal(unet.null_action_vector(), torch.full((8,), 0.25))
    for bad in ([0.5] * 3, [float("nan")] * 8):
        with pytest.raises(ValueError, match="`null_action` must be 8 finite numbers"):
            make_model(null_action=bad)


def test_cache_pipeline_step_pattern(model):
    """The pipeline calls [last clean frame, S noisy frames] with cache_frames=1; that equals one causal call."""
    sample, timestep, actions = inputs(model, num_frames=6)
    timestep[:, :3] = 0
    with torch.no_grad():
        full = model(sample, timestep, actions).sample
        first = model(sample[:, :, :2], timestep[:, :2], actions[:, :2], cache_frames=2)
        step = model(sample[:, :, 2:], timestep[:, 2:], actions[:, 2:], kv_cache=first.kv_cache, cache_frames=1)
    torch.testing.assert_close(step.sample, full[:, :, 2:], atol=ATOL, rtol=0)
    assert step.kv_cache.num_frames == 3


def test_cache_is_bounded_and_functional(model):
    size = model.config.temporal_cache_size
    sample, timestep, actions = inputs(model, num_frames=3)
    timestep[:] = 0
    with torch.no_grad():
        cache = model(sample, timestep, actions, cache_frames=3).kv_cache
        snapshot = [k.clone() for k in cache.keys]
        branch_a = model(sample, timestep, actions, kv_cache=cache, cache_frames=1).kv_cache
        assert branch_a is not cache and cache.num_frames == 3 and branch_a.num_frames == 4
        for before, after in zip(snapshot, cache.keys):
            assert torch.equal(before, after)  # the input cache was not mutated
        nbytes = []
        for _ in range(12):
            cache = model(sample, timestep, actions, kv_cache=cache, cache_frames=3).kv_cache
            assert cache.num_frames <= size
            assert all(k.shape[2] == cache.num_frames for k in (*cache.keys, *cache.values))
            nbytes.append(cache.nbytes)
    assert cache.num_frames == size and len(set(nbytes[-5:])) == 1  # memory flat once full
    assert cache.num_layers == model.num_temporal_layers
    # more cache_frames than the window keeps only the newest
    with torch.no_grad():
        big = model(*inputs(model, num_frames=size + 3), cache_frames=size + 3).kv_cache
    assert big.num_frames == size


def test_frame_positions_are_relative():
    """Rotary attention scores depend only on the distance between frames, so where the window starts (how many
    frames the world has run) does not matter."""
    head_dim, n = 16, 6
    q, k = torch.randn(2, n, head_dim), torch.randn(2, n, head_dim)
    cos, sin = get_frame_rotary_embedding(n + 40, head_dim, theta=10000.0, device="cpu")

    def scores(offset):
        c, s = cos[offset : offset + n], sin[offset : offset + n]
        return apply_frame_rotary_embedding(q, c, s) @ apply_frame_rotary_embedding(k, c, s).transpose(-1, -2)

    torch.testing.assert_close(scores(0), scores(40), atol=1e-4, rtol=1e-5)
    assert get_causal_frame_mask(2, 3, "cpu").tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]


def test_no_cache_requested_returns_none_or_input(model):
    sample, timestep, actions = inputs(model, num_frames=2)
    with torch.no_grad():
        assert model(sample, timestep, actions).kv_cache is None
        cache = model(sample, 0, actions, cache_frames=1).kv_cache
        assert model(sample, timestep, actions, kv_cache=cache).kv_cache is cache


# ------------------------------------------------------------------------------------------- text branch


def test_text_branch():
    model = make_model(text_cross_attention=True, text_embed_dim=24)
    sample, timestep, actions = inputs(model, batch_size=2, num_frames=3)
    text = torch.randn(2, 5, 24)
    with torch.no_grad():
        out = model(sample, timestep, actions, encoder_hidden_states=text).sample
        per_frame = model(sample, timestep, actions, encoder_hidden_states=text[:, None].expand(-1, 3, -1, -1)).sample
        other = model(sample, timestep, actions, encoder_hidden_states=torch.randn(2, 5, 24)).sample
    torch.testing.assert_close(out, per_frame, atol=ATOL, rtol=0)
    assert (out - other).abs().max() > 1e-4
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(sample, timestep, actions)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(sample, timestep, actions, encoder_hidden_states=torch.randn(2, 5, 23))
    # off by default: no text parameters, and text states are refused
    assert not any("attn_text" in n for n, _ in make_model().named_parameters())


# ------------------------------------------------------------------------------------ save/load, training


def test_save_load_round_trip(tmp_path):
    space = ActionSpace(buttons=("UP", "DOWN", "FIRE"), axes={"turn": (-90.0, 90.0)})
    model = make_model(action_space=space.to_dict())
    assert model.action_dim == 4 and model.action_space == space
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = YanSimUNetModel.from_pretrained(tmp_path).eval()
    assert loaded.action_space == space and loaded.config.action_space == space.to_dict()
    sample, timestep, actions = inputs(model, num_frames=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, timestep, actions).sample, model(sample, timestep, actions).sample)
    # the default (None) is stored as the full Doom action space
    assert YanSimUNetModel(**TINY).config.action_space == ActionSpace().to_dict()


def test_gradient_checkpointing_same_gradients():
    model = make_model().train()
    sample, timestep, actions = inputs(model, num_frames=3)

    def grads():
        model.zero_grad()
        model(sample, timestep, actions).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = grads()
    model.enable_gradient_checkpointing()
    assert all(b.gradient_checkpointing for b in (*model.down_blocks, model.mid_block, *model.up_blocks))
    calls = []
    original = model.mid_block._gradient_checkpointing_func
    model.mid_block._gradient_checkpointing_func = lambda *a: calls.append(1) or original(*a)
    ckpt = grads()
    assert calls, "checkpointing was not applied"
    assert ref.keys() == ckpt.keys()
    for name in ref:
        torch.testing.assert_close(ckpt[name], ref[name], atol=1e-5, rtol=1e-4, msg=name)


def test_attention_processors(model):
    processors = model.attn_processors
    temporal = [n for n in processors if n.endswith("attn_temporal.processor")]
    assert len(temporal) == model.num_temporal_layers and len(processors) == 3 * model.num_temporal_layers
    sample, timestep, actions = inputs(model, num_frames=3)
    with torch.no_grad():
        ref = model(sample, timestep, actions).sample
        model.set_attn_processor(AttnProcessor())
        assert isinstance(model.attn_processors[temporal[0]], YanSimTemporalAttnProcessor2_0)
        assert isinstance(model.attn_processors[temporal[0].replace("temporal", "spatial")], AttnProcessor)
        torch.testing.assert_close(model(sample, timestep, actions).sample, ref, atol=ATOL, rtol=0)
        model.set_attn_processor(AttnProcessor2_0())
        with pytest.raises(ValueError, match="YanSimTemporalAttnProcessor2_0"):
            model.set_attn_processor({n: AttnProcessor2_0() for n in processors})
        model.set_default_attn_processor()
        torch.testing.assert_close(model(sample, timestep, actions).sample, ref, atol=ATOL, rtol=0)
        model.set_attn_processor(AttnProcessor2_0())


# ------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs(model):
    sample, timestep, actions = inputs(model, num_frames=3)
    with torch.no_grad():
        cache = model(sample, 0, actions, cache_frames=2).kv_cache
    bad = [
        (dict(sample=sample[:, :, 0]), ValueError, "sample"),
        (dict(sample=sample[:, :2]), ValueError, "channels"),
        (dict(sample=sample[..., :7, :7]), ValueError, "divisible"),
        (dict(actions=actions[..., :3]), ValueError, "actions"),
        (dict(actions=actions[:, :2]), ValueError, "actions"),
        (dict(actions=actions.tolist()), TypeError, "actions"),
        (dict(timestep=torch.zeros(1, 2)), ValueError, "timestep"),
        (dict(timestep=torch.zeros(3, 3)), ValueError, "timestep"),
        (dict(timestep="t"), TypeError, "timestep"),
        (dict(encoder_hidden_states=torch.randn(1, 5, 768)), ValueError, "text_cross_attention"),
        (dict(cache_frames=4), ValueError, "cache_frames"),
        (dict(cache_frames=-1), ValueError, "cache_frames"),
        (dict(kv_cache=cache.keys), TypeError, "kv_cache"),
        (dict(kv_cache=dataclasses.replace(cache, batch_size=2)), ValueError, "batch"),
        (dict(kv_cache=dataclasses.replace(cache, latent_size=(4, 4))), ValueError, "4x4"),
    ]
    for kwargs, error, match in bad:
        args = {"sample": sample, "timestep": timestep, "actions": actions, **kwargs}
        with pytest.raises(error, match=match):
            model(**args)
    other = make_model(layers_per_block=2)
    with pytest.raises(ValueError, match="another configuration"):
        other(sample, timestep, actions, kv_cache=cache)
    with pytest.raises(ValueError, match="attention_levels"):
        YanSimUNetModel(**{**TINY, "attention_levels": (True,)})
    with pytest.raises(ValueError, match="divisible"):
        YanSimUNetModel(**{**TINY, "attention_head_dim": 24})


def test_bfloat16_pipeline_step():
    model = make_model().to(dtype=torch.bfloat16)
    sample, timestep, actions = inputs(model, num_frames=3)
    timestep[:, 0] = 0
    with torch.no_grad():
        cache = model(sample.bfloat16(), 0, actions, cache_frames=3).kv_cache
        out = model(sample.bfloat16(), timestep, actions, kv_cache=cache, cache_frames=1)
    assert out.sample.dtype == torch.bfloat16 and torch.isfinite(out.sample).all()
    assert out.kv_cache.keys[0].dtype == torch.bfloat16 and out.kv_cache.num_frames == 4
