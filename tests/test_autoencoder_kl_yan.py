"""Tests for `AutoencoderKLYan`: shapes and frame arithmetic, causality, streaming decode, memory savers, saving.

All models are tiny (8-16 channels, one resnet per block) so the file runs in seconds on a CPU.
"""

import doctest
import inspect
import json

import pytest
import torch
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput

from diffusers_yan import AutoencoderKLYan, YanVAEDecoderCache
from diffusers_yan.models.autoencoders import autoencoder_kl_yan


# the smallest channel widths for each spatial compression: every down block halves H and W
BLOCKS = {8: (8, 8, 16), 16: (8, 8, 8, 16), 32: (8, 8, 8, 8, 16)}


def make_vae(spatial=8, temporal=2, light=True, **kwargs) -> AutoencoderKLYan:
    config = dict(
        block_out_channels=BLOCKS[spatial],
        spatial_compression_ratio=spatial,
        temporal_compression_ratio=temporal,
        light_decoder=light,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
    )
    config.update(kwargs)
    return AutoencoderKLYan(**config).eval()


def video(num_frames, height=16, width=24, batch=1, channels=3):
    return torch.rand(batch, channels, num_frames, height, width) * 2 - 1


# ----------------------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------------------


def test_class_defaults_are_the_papers():
    defaults = {k: v.default for k, v in inspect.signature(AutoencoderKLYan.__init__).parameters.items()}
    assert defaults["spatial_compression_ratio"] == 32
    assert defaults["temporal_compression_ratio"] == 2
    assert defaults["latent_channels"] == 16
    assert defaults["light_decoder"] is True
    assert len(defaults["block_out_channels"]) == 5  # 2**5 == 32
    assert defaults["scaling_factor"] == 1.0 and isinstance(defaults["scaling_factor"], float)
    assert defaults["shift_factor"] == 0.0 and isinstance(defaults["shift_factor"], float)


def test_config_attributes_the_pipelines_use():
    vae = make_vae()
    for name in (
        "in_channels",
        "out_channels",
        "latent_channels",
        "spatial_compression_ratio",
        "temporal_compression_ratio",
        "scaling_factor",
        "shift_factor",
        "light_decoder",
    ):
        assert hasattr(vae.config, name), name


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial_compression_ratio=64, block_out_channels=(8,) * 6), "spatial_compression_ratio"),
        (dict(spatial_compression_ratio=16, block_out_channels=(8, 8, 16)), "needs 4 entries"),
        (dict(temporal_compression_ratio=4), "temporal_compression_ratio"),
        (dict(norm_num_groups=3), "norm_num_groups"),
        (dict(layers_per_block=0), "layers_per_block"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_vae(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# shapes, output types, frame arithmetic
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spatial, temporal, light",
    [(8, 2, True), (8, 2, False), (8, 1, True), (16, 2, True), (32, 2, True), (32, 1, False)],
)
def test_encode_decode_shapes_and_types(spatial, temporal, light):
    vae = make_vae(spatial, temporal, light)
    k = 2
    x = video(1 + k * temporal, height=spatial, width=2 * spatial, batch=2)
    with torch.no_grad():
        out = vae.encode(x)
        assert isinstance(out, AutoencoderKLOutput)
        assert isinstance(out.latent_dist, DiagonalGaussianDistribution)
        z = out.latent_dist.mode()
        assert z.shape == (2, 4, 1 + k, 1, 2)

        dec = vae.decode(z)
        assert isinstance(dec, DecoderOutput)
        assert dec.sample.shape == x.shape


def test_return_dict_false_and_forward():
    vae = make_vae()
    x = video(3)
    with torch.no_grad():
        (posterior,) = vae.encode(x, return_dict=False)
        assert isinstance(posterior, DiagonalGaussianDistribution)
        (sample,) = vae.decode(posterior.mode(), return_dict=False)
        (reconstruction,) = vae(x, return_dict=False)
        rec = vae(x)
    assert isinstance(rec, DecoderOutput) and rec.sample.shape == x.shape
    torch.testing.assert_close(rec.sample, sample)
    torch.testing.assert_close(reconstruction, sample)


@pytest.mark.parametrize("temporal", [1, 2])
def test_latent_frame_arithmetic(temporal):
    vae = make_vae(temporal=temporal)
    with torch.no_grad():
        for k in range(2):  # k = 2 is in test_encode_decode_shapes_and_types
            num_frames = 1 + k * temporal
            z = vae.encode(video(num_frames)).latent_dist.mode()
            assert z.shape[2] == 1 + k
            assert vae.decode(z).sample.shape[2] == num_frames


def test_sample_posterior_uses_generator():
    vae = make_vae()
    x = video(3)
    with torch.no_grad():
        a = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(1)).sample
        b = vae(x, sample_posterior=True, generator=torch.Generator().manual_seed(1)).sample
        c = vae(x, sample_posterior=False).sample
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_light_and_full_decoder_structure():
    light, full = make_vae(light=True, layers_per_block=2), make_vae(light=False, layers_per_block=2)
    # light: ordinary up blocks with layers_per_block resnets, then a single-resnet pixel-shuffle block
    assert [len(b.resnets) for b in light.decoder.up_blocks[:-1]] == [2, 2]
    assert isinstance(light.decoder.up_blocks[-1], autoencoder_kl_yan.YanPixelShuffleUpBlock3D)
    assert isinstance(light.decoder.up_blocks[-1].pixel_shuffle, torch.nn.PixelShuffle)
    # full: SD-style, one up block per down block with layers_per_block + 1 resnets
    assert [len(b.resnets) for b in full.decoder.up_blocks] == [3, 3, 3]
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(light.decoder) < n_params(full.decoder)
    assert n_params(light.encoder) == n_params(full.encoder)


# ----------------------------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    vae = make_vae()
    with pytest.raises(ValueError, match=r"`x` must be a 5-D"):
        vae.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"in_channels=3.*got 1"):
        vae.encode(torch.zeros(1, 1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"4 frames.*1 \+ k \* 2"):
        vae.encode(torch.zeros(1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match=r"divisible by spatial_compression_ratio=8, got 16x12"):
        vae.encode(torch.zeros(1, 3, 3, 16, 12))
    with pytest.raises(ValueError, match=r"`z` must be a 5-D"):
        vae.decode(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match=r"latent_channels=4.*got 3"):
        vae.decode(torch.zeros(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match=r"`z_chunk` must have latent_channels=4"):
        vae.decode_stream(torch.zeros(1, 5, 1, 2, 2))
    with pytest.raises(ValueError, match=r"YanVAEDecoderCache or None, got dict"):
        vae.decode_stream(torch.zeros(1, 4, 1, 2, 2), cache={})
    with torch.no_grad():
        _, cache = vae.decode_stream(torch.zeros(1, 4, 1, 2, 2))
        with pytest.raises(ValueError, match=r"batch size is 1 and latent size \(2, 2\)"):
            vae.decode_stream(torch.zeros(2, 4, 1, 2, 2), cache)
        with pytest.raises(ValueError, match=r"cache.to\(device, dtype\)"):
            vae.decode_stream(torch.zeros(1, 4, 1, 2, 2, dtype=torch.float64), cache)
        # another model's cache
        other = make_vae(light=False)
        with pytest.raises(ValueError, match="different model"):
            other.decode_stream(torch.zeros(1, 4, 1, 2, 2), cache)


# ----------------------------------------------------------------------------------------------------------------
# causality and streaming
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temporal", [1, 2])
def test_encode_of_prefix_is_prefix_of_encode(temporal):
    vae = make_vae(temporal=temporal)
    x = video(1 + 3 * temporal)
    with torch.no_grad():
        full = vae.encode(x).latent_dist.mean
        for j in range(3):
            prefix = vae.encode(x[:, :, : 1 + j * temporal]).latent_dist.mean
            torch.testing.assert_close(prefix, full[:, :, : 1 + j], atol=1e-5, rtol=1e-5)


def test_decode_is_causal():
    vae = make_vae()
    z = torch.randn(1, 4, 4, 2, 3)
    z_changed = z.clone()
    z_changed[:, :, 2:] += 1.0
    with torch.no_grad():
        a, b = vae.decode(z).sample, vae.decode(z_changed).sample
    # latent frames 0, 1 -> frames 0..2 (1 + 1 * 2); they must not see latent frame 2
    torch.testing.assert_close(a[:, :, :3], b[:, :, :3])
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:])


@pytest.mark.parametrize(
    "temporal, light, chunks",
    [(2, True, [1] * 4), (2, True, [2, 1, 2]), (2, False, [3, 2]), (1, True, [1, 3, 1])],
)
def test_decode_stream_equals_full_decode(temporal, light, chunks):
    vae = make_vae(temporal=temporal, light=light)
    z = torch.randn(2, 4, sum(chunks), 2, 3)
    with torch.no_grad():
        full = vae.decode(z).sample
        frames, cache, start = [], None, 0
        for i, n in enumerate(chunks):
            out, cache = vae.decode_stream(z[:, :, start : start + n], cache)
            assert out.shape[2] == (1 + (n - 1) * temporal if i == 0 else n * temporal)
            frames.append(out)
            start += n
    assert isinstance(cache, YanVAEDecoderCache) and cache.num_latent_frames == sum(chunks)
    torch.testing.assert_close(torch.cat(frames, dim=2), full, atol=1e-5, rtol=1e-5)


def test_decode_stream_cache_is_functional_and_bounded():
    vae = make_vae()
    z = torch.randn(1, 4, 6, 2, 2)
    with torch.no_grad():
        _, cache = vae.decode_stream(z[:, :, :2])
        snapshot = {k: v.clone() for k, v in cache.conv_states.items()}

        # two branches from one cache; the cache itself never changes
        a1, cache_a = vae.decode_stream(z[:, :, 2:3], cache)
        b1, _ = vae.decode_stream(-z[:, :, 2:3], cache)
        a2, _ = vae.decode_stream(z[:, :, 2:3], cache)
        assert cache_a is not cache and cache.num_latent_frames == 2 and cache_a.num_latent_frames == 3
        assert cache.conv_states.keys() == snapshot.keys()
        for key, value in snapshot.items():
            assert torch.equal(cache.conv_states[key], value), key
        torch.testing.assert_close(a1, a2)
        assert not torch.allclose(a1, b1)

        # bounded: every conv keeps kernel_t - 1 frames, whatever the length of the stream
        sizes = []
        for i in range(3, 6):
            _, cache_a = vae.decode_stream(z[:, :, i : i + 1], cache_a)
            sizes.append(cache_a.nbytes)
        assert len(set(sizes)) == 1
        convs = {n: m for n, m in vae.named_modules() if isinstance(m, autoencoder_kl_yan.YanCausalConv3d)}
        for key, value in cache_a.conv_states.items():
            assert value.shape[1] == convs[key].kernel_size[0] - 1, key

    # an empty cache is the same as no cache; `to` makes a moved copy
    with torch.no_grad():
        first, _ = vae.decode_stream(z[:, :, :1])
        first_empty, _ = vae.decode_stream(z[:, :, :1], YanVAEDecoderCache())
    torch.testing.assert_close(first, first_empty)
    moved = cache.to(dtype=torch.float64)
    assert all(v.dtype == torch.float64 for v in moved.conv_states.values())
    assert all(v.dtype == torch.float32 for v in cache.conv_states.values())


# ----------------------------------------------------------------------------------------------------------------
# memory savers and training
# ----------------------------------------------------------------------------------------------------------------


def test_slicing_matches_unsliced():
    vae = make_vae()
    x = video(3, batch=3)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
        vae.enable_slicing()
        z_sliced = vae.encode(x).latent_dist.mean
        y_sliced = vae.decode(z).sample
        vae.disable_slicing()
    torch.testing.assert_close(z_sliced, z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y_sliced, y, atol=1e-5, rtol=1e-5)


def test_tiling_shapes_and_no_op_for_one_tile():
    vae = make_vae()
    x = video(3, height=48, width=64)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
        # a tile as large as the frame: tiling is a no-op
        vae.enable_tiling(tile_sample_min_size=64)
        torch.testing.assert_close(vae.encode(x).latent_dist.mean, z)
        torch.testing.assert_close(vae.decode(z).sample, y)
        # real tiles (2 x 3 of them): same shapes, finite
        vae.enable_tiling(tile_sample_min_size=32, tile_overlap_factor=0.25)
        assert vae.tile_sample_min_size == 32 and vae.tile_overlap_factor == 0.25
        z_tiled = vae.encode(x).latent_dist.mean
        y_tiled = vae.decode(z).sample
        vae.disable_tiling()
    assert z_tiled.shape == z.shape and y_tiled.shape == y.shape
    assert torch.isfinite(z_tiled).all() and torch.isfinite(y_tiled).all()
    with pytest.raises(ValueError, match="multiple of spatial_compression_ratio=8"):
        vae.enable_tiling(tile_sample_min_size=12)
    with pytest.raises(ValueError, match="tile_overlap_factor"):
        vae.enable_tiling(tile_overlap_factor=1.0)


class _NearestDecoder(torch.nn.Module):
    """A spatially local stand-in decoder (nearest upsampling): tiled and untiled results must agree exactly."""

    def forward(self, z, stream=None):
        return z[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2)


class _PoolEncoder(torch.nn.Module):
    """A spatially local stand-in encoder (8x8 average pooling) producing 2 * latent_channels moments."""

    def forward(self, x, stream=None):
        return torch.nn.functional.avg_pool3d(x, (1, 8, 8)).repeat(1, 3, 1, 1, 1)[:, :8]


@pytest.mark.parametrize("tile, overlap", [(16, 0.5), (32, 0.25), (24, 0.34)])
def test_tiling_blends_tiles_seamlessly(tile, overlap):
    # The real model's mid-block attention and GroupNorm see the whole frame, so tiles differ from the untiled
    # result by design. With local stand-ins, overlap blending must reproduce the untiled result exactly.
    vae = make_vae()
    vae.encoder, vae.decoder = _PoolEncoder(), _NearestDecoder()
    z, x = torch.randn(1, 4, 2, 6, 9), video(3, height=48, width=72)
    y, moments = vae.decode(z).sample, vae.encode(x).latent_dist.parameters
    vae.enable_tiling(tile_sample_min_size=tile, tile_overlap_factor=overlap)
    torch.testing.assert_close(vae.decode(z).sample, y)
    torch.testing.assert_close(vae.encode(x).latent_dist.parameters, moments)


def test_gradient_checkpointing_gives_same_gradients():
    x = video(3, height=16, width=16)

    def grads(vae):
        vae.train()
        vae.zero_grad()
        vae(x).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None}

    vae = make_vae()
    reference = grads(vae)

    calls = []

    def counting_checkpoint(module, *args):
        calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    vae.enable_gradient_checkpointing(gradient_checkpointing_func=counting_checkpoint)
    assert vae.is_gradient_checkpointing
    checkpointed = grads(vae)
    # encoder: 3 down blocks + mid; decoder: mid + 3 up blocks (forward only; the recompute calls module directly)
    assert len(calls) == 8 and "YanPixelShuffleUpBlock3D" in calls
    assert reference.keys() == checkpointed.keys()
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], atol=1e-6, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------------------------------------------
# saving and loading, docs
# ----------------------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    vae = make_vae(spatial=16, temporal=1, light=False, scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AutoencoderKLYan.from_pretrained(tmp_path).eval()
    saved_config = {k: v for k, v in json.loads(loaded.to_json_string()).items() if k != "_name_or_path"}
    assert saved_config == json.loads(vae.to_json_string())
    assert loaded.config.scaling_factor == 0.5 and loaded.config.shift_factor == 0.1
    x = video(3, height=16, width=32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).sample, vae(x).sample)
        # streaming works on a loaded model (cache keys are set at construction)
        z = torch.randn(1, 4, 2, 1, 2)
        out, cache = loaded.decode_stream(z[:, :, :1])
        out2, _ = loaded.decode_stream(z[:, :, 1:], cache)
        torch.testing.assert_close(torch.cat([out, out2], dim=2), loaded.decode(z).sample, atol=1e-5, rtol=1e-5)


def test_docstring_example_runs():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    (test,) = [t for t in finder.find(AutoencoderKLYan) if t.name.endswith("AutoencoderKLYan") and t.examples]
    result = runner.run(test)
    assert result.failed == 0
