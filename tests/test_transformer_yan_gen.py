"""YanGenTransformer3DModel: parity with diffusers' Wan, the action branch, causal streaming and the KV cache."""

import logging

import pytest
import torch
from diffusers import WanTransformer3DModel

from diffusers_yan import ActionSpace, YanGenKVCache, YanGenTransformer3DModel


# A tiny Wan2.1: 2 layers, 2 heads of 12 channels (RoPE needs head_dim divisible by 6 and even parts).
TINY_WAN = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=32,
    ffn_dim=32,
    num_layers=2,
    rope_max_seq_len=32,
)
# Wan2.1 I2V adds CLIP image tokens (here 8 channels) through added K/V projections in every cross-attention
TINY_WAN_I2V = dict(TINY_WAN, in_channels=12, image_dim=8, added_kv_proj_dim=24)
SPACE = ActionSpace(buttons=("LEFT", "RIGHT", "JUMP"))


def _wan(config):
    torch.manual_seed(0)
    model = WanTransformer3DModel(**config).eval()
    with torch.no_grad():  # the default init leaves several tensors at zero; randomise so parity means something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _causal(**overrides):
    torch.manual_seed(0)
    config = dict(TINY_WAN, action_space=SPACE.to_dict(), action_embed_dim=8, num_frames_per_block=1)
    config.update(kv_cache_max_frames=2, **overrides)
    model = YanGenTransformer3DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_parity_with_diffusers_wan(variant):
    config = TINY_WAN if variant == "t2v" else TINY_WAN_I2V
    wan = _wan(config)
    yan = YanGenTransformer3DModel(**config, action_space=None).eval()
    yan.load_state_dict(wan.state_dict(), strict=True)

    x = torch.randn(2, config["in_channels"], 3, 8, 8)
    t = torch.tensor([999, 400])
    # diffusers' Wan processor assumes 512 text tokens when an image branch exists
    text = torch.randn(2, 512 if variant == "i2v" else 7, 16)
    image = torch.randn(2, 5, 8) if variant == "i2v" else None
    with torch.no_grad():
        expected = wan(x, t, text, encoder_hidden_states_image=image).sample
        got = yan(x, t, text, encoder_hidden_states_image=image).sample
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_loads_wan_folder_with_zero_init_action_branch(tmp_path, caplog):
    wan = _wan(TINY_WAN)
    wan.save_pretrained(tmp_path / "wan")
    with caplog.at_level(logging.WARNING, logger="diffusers_yan"):
        yan = YanGenTransformer3DModel.from_pretrained(tmp_path / "wan", action_embed_dim=8).eval()
    assert yan.action_space == ActionSpace()  # the default (Doom) action space
    assert any("new Yan-Gen weights" in r.getMessage() and "to_out_action" in r.getMessage() for r in caplog.records)

    x, t, text = torch.randn(1, 4, 2, 8, 8), torch.tensor([500]), torch.randn(1, 7, 16)
    actions = ActionSpace().encode_sequence(["MOVE_FORWARD", "ATTACK"])[None]
    with torch.no_grad():
        expected = wan(x, t, text).sample
        got = yan(x, t, text, actions=actions).sample
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = _causal()
    model.save_pretrained(tmp_path / "yan")
    loaded = YanGenTransformer3DModel.from_pretrained(tmp_path / "yan").eval()
    assert loaded.action_space == SPACE and loaded.config.num_frames_per_block == 1
    x, t, text = torch.randn(1, 4, 2, 8, 8), torch.tensor([[900, 300]]), torch.randn(1, 7, 16)
    actions = SPACE.encode_sequence(["LEFT", "RIGHT+JUMP"])[None]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, t, text, actions=actions).sample, model(x, t, text, actions=actions).sample
        )


def test_streaming_with_kv_cache_equals_one_shot_block_causal_forward():
    model = _causal()  # blocks of 1 latent frame, window of 2 past frames
    frames = 5
    x, text = torch.randn(1, 4, frames, 8, 8), torch.randn(1, 7, 16)
    t = torch.tensor([[0, 0, 200, 600, 999]])  # per-frame timesteps (diffusion forcing)
    actions = SPACE.encode_sequence(["LEFT", "RIGHT", "JUMP", "NOOP", "LEFT+JUMP"])[None]
    with torch.no_grad():
        one_shot = model(x, t, text, actions=actions).sample
        cache, outs = None, []
        for f in range(frames):
            sl = slice(f, f + 1)
            out = model(x[:, :, sl], t[:, sl], text, actions=actions[:, sl], kv_cache=cache, return_kv_cache=True)
            outs.append(out.sample)
            cache = out.kv_cache
    torch.testing.assert_close(torch.cat(outs, dim=2), one_shot, rtol=1e-4, atol=1e-4)
    # the window is bounded: 2 past frames, however long the world runs
    assert cache.num_frames == 2 and cache.num_frames_seen == frames
    assert cache.frame_indices.tolist() == [3, 4]


def test_future_actions_never_change_past_frames():
    model = _causal()
    x, t, text = torch.randn(1, 4, 3, 8, 8), torch.tensor([[999, 999, 999]]), torch.randn(1, 7, 16)
    a = SPACE.encode_sequence(["LEFT", "RIGHT", "JUMP"])[None]
    b = SPACE.encode_sequence(["LEFT", "RIGHT", "LEFT+RIGHT"])[None]
    with torch.no_grad():
        out_a, out_b = model(x, t, text, actions=a).sample, model(x, t, text, actions=b).sample
    torch.testing.assert_close(out_a[:, :, :2], out_b[:, :, :2])
    assert not torch.allclose(out_a[:, :, 2], out_b[:, :, 2])  # ...but the action does act on its own frame


def test_kv_cache_is_functional_and_flat():
    model = _causal()
    text = torch.randn(1, 7, 16)
    with torch.no_grad():
        cache = model(torch.randn(1, 4, 1, 8, 8), torch.tensor([0]), text, return_kv_cache=True).kv_cache
        before = [k.clone() for k in cache.keys]
        sizes = []
        for _ in range(4):
            new = model(torch.randn(1, 4, 1, 8, 8), torch.tensor([0]), text, kv_cache=cache, return_kv_cache=True)
            sizes.append(new.kv_cache.nbytes)
            # the input cache is untouched, so a world can branch from it
            assert cache.num_frames_seen in (1, 2, 3, 4) and all(torch.equal(k, b) for k, b in zip(cache.keys, before))
            cache, before = new.kv_cache, [k.clone() for k in new.kv_cache.keys]
    assert isinstance(cache, YanGenKVCache)
    assert sizes[1:] == [sizes[1]] * 3  # flat once the window is full


def test_clear_errors():
    wan_like = YanGenTransformer3DModel(**TINY_WAN, action_space=None)
    x, t, text = torch.randn(1, 4, 2, 8, 8), torch.tensor([1]), torch.randn(1, 7, 16)
    with pytest.raises(ValueError, match="no action branch"):
        wan_like(x, t, text, actions=torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="causal"):
        wan_like(x, t, text, return_kv_cache=True)
    with pytest.raises(ValueError, match="`actions` must be"):
        _causal()(x, t, text, actions=torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="num_frames_per_block"):
        _causal(num_frames_per_block=2)(torch.randn(1, 4, 3, 8, 8), t, text)
