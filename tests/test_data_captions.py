"""Engine-grounded captions on crafted inputs, and the VLM captioner's code path on a tiny random Qwen2.5-VL."""

import numpy as np
import pytest
import torch

from diffusers_yan.data.captions import VLMCaptioner, dominant_colours, global_caption, local_caption


def test_dominant_colours_and_lighting():
    dark_red = np.zeros((48, 64, 3), np.uint8)
    dark_red[:, :40] = (160, 30, 30)
    colours, lighting = dominant_colours([dark_red])
    assert colours == ["red", "black"] and lighting == "dark"
    colours, lighting = dominant_colours([np.full((48, 64, 3), 200, np.uint8)])
    assert colours == ["light grey"] and lighting == "bright"


def test_global_caption_names_world_layout_and_colours():
    frames = [np.full((48, 64, 3), (50, 120, 50), np.uint8)]
    text = global_caption(
        "freedoom2", "MAP01", {"num_sectors": 5, "width": 1000.0, "height": 500.0, "floor_levels": 3}, frames
    )
    assert "Freedoom map MAP01" in text
    assert "a few connected rooms" in text and "1000x500" in text and "stairs" in text
    assert "green" in text and "dim lighting" in text
    text = global_caption("basic", None, {"num_sectors": 1}, frames)
    assert "the basic scenario" in text and "a single open area" in text


def test_local_caption_objects_positions_actions_events():
    w, h = 64, 48
    frames = [
        {
            "labels": [
                {"name": "ShotgunGuy", "x": 50, "y": 10, "w": 10, "h": 30},  # right, close
                {"name": "BulletPuff", "x": 30, "y": 20, "w": 2, "h": 2},  # an effect: not named
            ],
            "events": ["damage"],
            "action": {"MOVE_FORWARD": 1.0, "TURN_LEFT": 0.0},
        },
        {
            "labels": [{"name": "Medikit", "x": 28, "y": 30, "w": 6, "h": 4}],  # ahead, far
            "events": ["pickup", "door"],
            "action": {"MOVE_FORWARD": 1.0, "TURN_LEFT": 1.0},
        },
    ]
    text = local_caption(frames, w, h)
    assert text.startswith("The player moves forward and turns left.")
    assert "a shotgun guy on the right, close" in text and "a medikit ahead, far" in text
    assert "bullet puff" not in text
    assert "Events: takes damage, picks up an item, a door or lift moves." in text
    assert (
        local_caption([{"labels": [], "events": [], "action": {}}], w, h)
        == "The player stands still. No objects in view."
    )


def _tiny_qwen25_vl():
    """A random 1-layer Qwen2.5-VL and a processor built from local pieces: nothing is downloaded."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = [
        "<pad>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    words = ["user", "assistant", "a", "room", "doom", "frame", "the", "is", "dark", "grey", "corridor", "describe"]
    vocab = {t: i for i, t in enumerate(specials + words + ["<unk>"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=r"(<\|[a-z_]+\|>|\s+)", behavior="isolated")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        additional_special_tokens=specials[1:],
    )
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }} {% for c in m['content'] %}{% if c['type'] == 'image' %}"
        "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
    )
    image_processor = transformers.Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)

    class TinyQwenProcessor:
        """Does what Qwen2_5_VLProcessor does for images (which needs torchvision, not a dependency here):
        expand each <|image_pad|> to the image's number of merged patches, tokenize, add pixel values."""

        def apply_chat_template(self, messages, add_generation_prompt=False):
            return tokenizer.apply_chat_template(
                messages, chat_template=template, add_generation_prompt=add_generation_prompt, tokenize=False
            )

        def __call__(self, text, images, return_tensors="pt"):
            image_inputs = image_processor(images=images, return_tensors=return_tensors)
            counts = iter((image_inputs["image_grid_thw"].prod(-1) // image_processor.merge_size**2).tolist())
            expanded = []
            for t in text:
                parts = t.split("<|image_pad|>")
                expanded.append(parts[0] + "".join("<|image_pad|>" * next(counts) + p for p in parts[1:]))
            enc = dict(tokenizer(expanded, return_tensors=return_tensors))
            enc.pop("token_type_ids", None)
            return {**enc, **image_inputs}

        def batch_decode(self, ids, skip_special_tokens=True):
            return tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens)

    config = transformers.Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            eos_token_id=vocab["<|im_end|>"],
            pad_token_id=0,
            bos_token_id=vocab["<|im_start|>"],
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=32,
            fullatt_block_indexes=[0],
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
        ),
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    torch.manual_seed(0)
    return transformers.Qwen2_5_VLForConditionalGeneration(config), TinyQwenProcessor()


def test_vlm_captioner_code_path_on_tiny_random_qwen25_vl():
    model, processor = _tiny_qwen25_vl()
    captioner = VLMCaptioner(model, processor, max_new_tokens=4)
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    one = captioner.caption([frame], captioner.GLOBAL_PROMPT)
    three = captioner.caption([frame, frame, frame], captioner.LOCAL_PROMPT)
    assert isinstance(one, str) and isinstance(three, str)
    assert 0 < len(one.split()) <= 4  # random weights, but exactly the generated tokens are decoded
    assert captioner.caption([frame], captioner.GLOBAL_PROMPT) == one  # greedy decoding is deterministic


def test_collect_with_vlm_captioner(tmp_path):
    """`captioner="vlm"` goes through the real collection path: every row gets the VLM's captions."""
    pytest.importorskip("vizdoom")
    datasets = pytest.importorskip("datasets")
    from diffusers_yan.data import CollectConfig, DoomEnvConfig, collect

    model, processor = _tiny_qwen25_vl()
    captioner = VLMCaptioner(model, processor, max_new_tokens=3)
    env = DoomEnvConfig(scenario="basic", resolution=(64, 48), max_steps=24)
    config = CollectConfig(
        env=env, episodes=1, agent="random", seed=0, out=str(tmp_path / "vlm"), captioner="vlm", vlm_model=captioner
    )
    info = collect(config)
    ds = datasets.load_from_disk(str(tmp_path / "vlm"))
    assert info["captioner"] == "vlm" and len(ds) > 0
    assert all(isinstance(c, str) for c in ds["global_caption"]) and len(set(ds["global_caption"])) == 1
    assert not ds[0]["global_caption"].startswith("Doom,")  # not the engine caption
    with pytest.raises(ValueError, match="workers=1"):
        CollectConfig(env=env, out=str(tmp_path / "x"), captioner="vlm", vlm_model=captioner, workers=2)
