"""`AutoencoderKLYan`: the causal video VAE of Yan-Sim (and of Yan-Edit's depth latents).

The seed's changes to the SD VAE: spatial compression 8 -> 32, temporal compression 1 -> 2 ("1x8x8 -> 2x32x32"),
latent channels 4 -> 16, and a light decoder ("reducing a layer per up block; added a single layer up block and a
pixel shuffle layer at the end"). To decode frames while a world is being played, the model is causal in time:

- every temporal convolution is a causal 3-D convolution (it pads only on the past side; the very first frame is
  padded by repeating itself), and every norm / attention acts on one frame at a time, so frame ``t`` of any
  activation depends on input frames ``<= t`` only;
- the first frame is encoded alone and later frames in groups of ``temporal_compression_ratio``, so a video of
  ``F = 1 + k * tc`` frames has ``1 + k`` latent frames and decodes back to exactly ``F`` frames;
- `AutoencoderKLYan.decode_stream` decodes latent frames as they arrive, carrying a small, immutable
  `YanVAEDecoderCache` (the last ``kernel - stride`` input frames of each causal convolution). Chunked decoding
  gives the same frames as one full `decode`, and a cache can be reused to branch a world.

Layout: videos are ``[B, C, F, H, W]`` in ``[-1, 1]`` (the diffusers video convention, as in `AutoencoderKLWan`),
latents are ``[B, latent_channels, 1 + (F - 1) // tc, H // sc, W // sc]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.utils import logging
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn


logger = logging.get_logger(__name__)

SUPPORTED_SPATIAL_COMPRESSION_RATIOS = (8, 16, 32)
SUPPORTED_TEMPORAL_COMPRESSION_RATIOS = (1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Streaming cache
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class YanVAEDecoderCache:
    """What `AutoencoderKLYan.decode_stream` needs to continue a stream: immutable, so a world can be branched.

    Args:
        conv_states: for every causal convolution of the decoder (keyed by its module name), its last
            ``kernel_t - 1`` input frames, frame-major ``[B, kernel_t - 1, C, h, w]``. Bounded: the cache never
            grows with the length of the stream. Treat it as read-only; `decode_stream` returns a new cache object
            and never changes the one it was given.
        first_frame_decoded: whether latent frame 0 was already decoded. A cache with ``False`` (e.g. the empty
            ``YanVAEDecoderCache()``) is the same as passing ``cache=None``.
        num_latent_frames: how many latent frames were decoded so far (information only).
    """

    conv_states: Mapping[str, torch.Tensor] = field(default_factory=dict)
    first_frame_decoded: bool = False
    num_latent_frames: int = 0

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> YanVAEDecoderCache:
        """A copy with every cached tensor moved to ``device`` / cast to ``dtype``."""
        return YanVAEDecoderCache(
            conv_states={k: v.to(device=device, dtype=dtype) for k, v in self.conv_states.items()},
            first_frame_decoded=self.first_frame_decoded,
            num_latent_frames=self.num_latent_frames,
        )

    @property
    def nbytes(self) -> int:
        """Memory held by the cached frames, in bytes."""
        return sum(v.numel() * v.element_size() for v in self.conv_states.values())


class _StreamState:
    """The causal state of one encode/decode pass, handed down to every causal layer.

    ``past`` holds the frames each causal conv saw at the end of the previous chunk (read only); each conv writes its
    own tail into ``present``. ``is_first`` marks a chunk that starts at frame 0 of the video.
    """

    def __init__(self, past: Mapping[str, torch.Tensor] | None = None, is_first: bool = True):
        self.past = past if past is not None else {}
        self.is_first = is_first
        self.present: dict[str, torch.Tensor] = {}


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------


class YanCausalConv3d(nn.Conv3d):
    """A 3-D convolution that is causal in time, on frame-major activations ``[B, F, C, H, W]``.

    Spatially it zero-pads like an ordinary "same" convolution. In time it pads ``kernel_t - 1`` frames on the
    past side only: at the start of a video with copies of the first frame (so a still first frame looks like a
    video that was still before it), in the middle of a stream with the cached tail of the previous chunk. Output
    frame ``t`` sees input frames ``t * stride_t - kernel_t + 1 .. t * stride_t``, never a later one.

    The weight is an ordinary `nn.Conv3d` weight ``[O, C, kernel_t, kh, kw]``, but the product is computed as one
    2-D convolution over the ``kernel_t`` stacked frames of each window (``[B * n, C * kernel_t, H, W]``): PyTorch's
    CPU `conv3d` has no oneDNN path and is an order of magnitude slower than `conv2d` at these sizes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
        bias: bool = True,
    ):
        kernel_size = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        if stride[0] > kernel_size[0]:
            raise ValueError(f"temporal stride {stride[0]} must not exceed the temporal kernel {kernel_size[0]}.")
        # temporal padding is causal and done by hand; spatial padding is the conv's own ("same", zeros)
        padding = (0, kernel_size[1] // 2, kernel_size[2] // 2)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        # set by AutoencoderKLYan to the module's name: the key of this conv's frames in a streaming cache
        self.cache_key = ""

    def forward(self, hidden_states: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        batch_size, _, channels, height, width = hidden_states.shape
        kernel_t, stride_t = self.kernel_size[0], self.stride[0]

        # 1. past frames: the first frame repeated at the start of a video, else the cached tail of the last chunk
        if stream is None or stream.is_first:
            past = hidden_states[:, :1].expand(-1, kernel_t - 1, -1, -1, -1)
        else:
            past = stream.past.get(self.cache_key)
            if past is None:
                raise ValueError(
                    f"The streaming cache has no frames for `{self.cache_key}`; it was made by a different model."
                )
        hidden_states = torch.cat([past, hidden_states], dim=1)
        num_windows = (hidden_states.shape[1] - kernel_t) // stride_t + 1

        # 2. keep the frames the next window will need (at most kernel_t - 1). `clone`, so that the cache does not
        # keep this whole chunk alive through a view.
        if stream is not None:
            stream.present[self.cache_key] = hidden_states[:, num_windows * stride_t :].clone()

        # 3. windows [B, n, C, H, W, kt] -> [B * n, C * kt, H, W], matching weight.view(O, C * kt, kh, kw)
        windows = hidden_states.unfold(1, kernel_t, stride_t).permute(0, 1, 2, 5, 3, 4)
        windows = windows.reshape(batch_size * num_windows, channels * kernel_t, height, width)
        weight = self.weight.view(self.out_channels, channels * kernel_t, *self.kernel_size[1:])
        output = F.conv2d(windows, weight, self.bias, stride=self.stride[1:], padding=self.padding[1:])
        return output.unflatten(0, (batch_size, num_windows))


class YanFrameConv2d(nn.Conv2d):
    """A 2-D convolution applied to every frame of ``[B, F, C, H, W]`` (no temporal extent, no state)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.flatten(0, 1)).unflatten(0, hidden_states.shape[:2])


class YanGroupNorm(nn.GroupNorm):
    """GroupNorm over each frame of ``[B, F, C, H, W]`` on its own: statistics over frames would leak the future."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.flatten(0, 1)).unflatten(0, hidden_states.shape[:2])


# Adapted from diffusers.models.resnet.ResnetBlock2D (no time embedding; causal 3-D convs; per-frame norms)
class YanResnetBlock3D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, norm_num_groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.norm1 = YanGroupNorm(norm_num_groups, in_channels, eps=eps)
        self.conv1 = YanCausalConv3d(in_channels, out_channels, kernel_size=3)
        self.norm2 = YanGroupNorm(norm_num_groups, out_channels, eps=eps)
        self.conv2 = YanCausalConv3d(out_channels, out_channels, kernel_size=3)
        self.conv_shortcut = (
            YanFrameConv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, hidden_states: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        residual = hidden_states if self.conv_shortcut is None else self.conv_shortcut(hidden_states)
        hidden_states = self.conv1(F.silu(self.norm1(hidden_states)), stream)
        hidden_states = self.conv2(F.silu(self.norm2(hidden_states)), stream)
        return hidden_states + residual


class YanDownsample3D(nn.Module):
    """Spatial downsampling by 2 (SD's asymmetric-pad strided conv, per frame), optionally temporal by 2.

    The temporal step is a causal conv with kernel 3 and stride 2 over the (first-frame padded) sequence, so latent
    frame 0 sees only frame 0 and latent frame ``k`` sees frames ``2k - 2 .. 2k``: the first frame is encoded
    alone, the later ones in pairs.
    """

    def __init__(self, channels: int, temporal: bool = False):
        super().__init__()
        self.conv = YanFrameConv2d(channels, channels, kernel_size=3, stride=2)
        self.time_conv = (
            YanCausalConv3d(channels, channels, kernel_size=(3, 1, 1), stride=(2, 1, 1)) if temporal else None
        )
        if self.time_conv is not None:
            # start as the mean of the two newest frames of each window (the first frame itself for latent frame 0)
            with torch.no_grad():
                self.time_conv.weight.zero_()
                self.time_conv.bias.zero_()
                eye = torch.eye(channels).view(channels, channels, 1, 1)
                self.time_conv.weight[:, :, 1] = 0.5 * eye
                self.time_conv.weight[:, :, 2] = 0.5 * eye

    def forward(self, hidden_states: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        hidden_states = self.conv(F.pad(hidden_states, (0, 1, 0, 1)))
        if self.time_conv is not None:
            hidden_states = self.time_conv(hidden_states, stream)
        return hidden_states


class YanUpsample3D(nn.Module):
    """Optionally temporal upsampling by 2, then spatial upsampling by 2 (nearest + conv, per frame).

    The temporal step maps each frame to two with a causal conv to ``2 * channels`` (a pixel shuffle in time). At
    the start of a video the first of the two frames of latent frame 0 is dropped, so ``n`` latent frames give
    ``2n - 1`` frames, the mirror of `YanDownsample3D`.
    """

    def __init__(self, channels: int, temporal: bool = False):
        super().__init__()
        self.time_conv = YanCausalConv3d(channels, 2 * channels, kernel_size=(3, 1, 1)) if temporal else None
        if self.time_conv is not None:
            # start as "repeat the current frame twice"
            with torch.no_grad():
                self.time_conv.weight.zero_()
                self.time_conv.bias.zero_()
                eye = torch.eye(channels).view(channels, channels, 1, 1)
                self.time_conv.weight[:channels, :, 2] = eye
                self.time_conv.weight[channels:, :, 2] = eye
        self.conv = YanFrameConv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        if self.time_conv is not None:
            batch_size, num_frames, channels, height, width = hidden_states.shape
            # [B, n, 2C, h, w] -> [B, 2n, C, h, w] (a view): the two frames of latent frame k at 2k and 2k + 1
            hidden_states = self.time_conv(hidden_states, stream).reshape(
                batch_size, 2 * num_frames, channels, height, width
            )
            if stream is None or stream.is_first:
                hidden_states = hidden_states[:, 1:]
        frames = hidden_states.shape[:2]
        hidden_states = F.interpolate(hidden_states.flatten(0, 1), scale_factor=2.0, mode="nearest")
        return self.conv(hidden_states.unflatten(0, frames))


class YanSpatialAttention(nn.Module):
    """Single-head self-attention over the pixels of each frame (SD's VAE mid-block attention, frame by frame)."""

    def __init__(self, channels: int, norm_num_groups: int = 32, eps: float = 1e-6):
        super().__init__()
        # Adapted from diffusers.models.unets.unet_2d_blocks.UNetMidBlock2D (its VAE attention)
        self.attn = Attention(
            channels,
            heads=1,
            dim_head=channels,
            eps=eps,
            norm_num_groups=norm_num_groups,
            residual_connection=True,
            bias=True,
            upcast_softmax=True,
            _from_deprecated_attn_block=True,
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.attn(hidden_states.flatten(0, 1)).unflatten(0, hidden_states.shape[:2])


class YanMidBlock3D(nn.Module):
    def __init__(self, channels: int, norm_num_groups: int = 32, add_attention: bool = True):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                YanResnetBlock3D(channels, channels, norm_num_groups),
                YanResnetBlock3D(channels, channels, norm_num_groups),
            ]
        )
        self.attention = YanSpatialAttention(channels, norm_num_groups) if add_attention else None

    def forward(self, hidden_states: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        hidden_states = self.resnets[0](hidden_states, stream)
        if self.attention is not None:
            hidden_states = self.attention(hidden_states)
        return self.resnets[1](hidden_states, stream)


class YanDownBlock3D(nn.Module):
    """``num_layers`` resnets, then downsampling by 2 in space (and in time when ``temporal``)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, norm_num_groups: int = 32, temporal: bool = False
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                YanResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, norm_num_groups)
                for i in range(num_layers)
            ]
        )
        self.downsampler = YanDownsample3D(out_channels, temporal=temporal)

    def forward(self, hidden_states: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, stream)
        return self.downsampler(hidden_states, stream)


class YanUpBlock3D(nn.Module):
    """``num_layers`` resnets, then upsampling by 2 in space (and in time when ``temporal``)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, norm_num_groups: int = 32, temporal: bool = False
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                YanResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, norm_num_groups)
                for i in range(num_layers)
            ]
        )
        self.upsampler = YanUpsample3D(out_channels, temporal=temporal)

    def forward(self, hidden_states: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            hidden_states = resnet(hidden_states, stream)
        return self.upsampler(hidden_states, stream)


class YanPixelShuffleUpBlock3D(nn.Module):
    """The light decoder's last block: one resnet, then a conv to ``out_channels * 4`` and a 2x pixel shuffle.

    It replaces the last ordinary up block and the output conv: the final conv runs at half resolution, and the
    pixel shuffle puts its ``4 * out_channels`` outputs onto the full-resolution grid.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, norm_num_groups: int = 32):
        super().__init__()
        self.resnet = YanResnetBlock3D(in_channels, hidden_channels, norm_num_groups)
        self.norm = YanGroupNorm(norm_num_groups, hidden_channels, eps=1e-6)
        self.conv = YanFrameConv2d(hidden_channels, out_channels * 4, kernel_size=3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)

    def forward(self, hidden_states: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        hidden_states = self.resnet(hidden_states, stream)
        hidden_states = self.conv(F.silu(self.norm(hidden_states)))
        # [B, F, 4C, h, w] -> [B, F, C, 2h, 2w]
        return self.pixel_shuffle(hidden_states)


# ----------------------------------------------------------------------------------------------------------------
# Encoder and decoder
# ----------------------------------------------------------------------------------------------------------------


# Adapted from diffusers.models.autoencoders.vae.Encoder (3-D causal, every down block downsamples)
class YanEncoder3D(nn.Module):
    """Video ``[B, C, F, H, W]`` -> moments ``[B, 2 * latent_channels, n, h, w]`` (frame-major inside)."""

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        temporal_compression_ratio: int,
        norm_num_groups: int,
        mid_block_add_attention: bool,
    ):
        super().__init__()
        self.gradient_checkpointing = False
        self.conv_in = YanCausalConv3d(in_channels, block_out_channels[0], kernel_size=3)
        # temporal downsampling in the deepest block, where frames are smallest
        self.down_blocks = nn.ModuleList(
            [
                YanDownBlock3D(
                    block_out_channels[max(i - 1, 0)],
                    out_channels,
                    layers_per_block,
                    norm_num_groups,
                    temporal=temporal_compression_ratio == 2 and i == len(block_out_channels) - 1,
                )
                for i, out_channels in enumerate(block_out_channels)
            ]
        )
        self.mid_block = YanMidBlock3D(block_out_channels[-1], norm_num_groups, mid_block_add_attention)
        self.conv_norm_out = YanGroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        # mean and log-variance
        self.conv_out = YanCausalConv3d(block_out_channels[-1], 2 * latent_channels, kernel_size=3)

    def forward(self, sample: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        # [B, C, F, H, W] -> frame-major [B, F, C, H, W]: per-frame layers then see a free [B * F, C, H, W] view
        hidden_states = self.conv_in(sample.transpose(1, 2), stream)
        checkpoint = torch.is_grad_enabled() and self.gradient_checkpointing
        for block in [*self.down_blocks, self.mid_block]:
            if checkpoint:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, stream)
            else:
                hidden_states = block(hidden_states, stream)
        hidden_states = self.conv_out(F.silu(self.conv_norm_out(hidden_states)), stream)
        return hidden_states.transpose(1, 2).contiguous()


# Adapted from diffusers.models.autoencoders.vae.Decoder (3-D causal; optional light decoder)
class YanDecoder3D(nn.Module):
    """Latents ``[B, latent_channels, n, h, w]`` -> video ``[B, C, F, H, W]`` (frame-major inside).

    The returned video is a transposed view of frame-major storage: ``video.transpose(1, 2)`` (or
    ``video[b].permute(1, 0, 2, 3)``, as diffusers' `VideoProcessor` does) is contiguous, without a copy.
    """

    def __init__(
        self,
        latent_channels: int,
        out_channels: int,
        block_out_channels: tuple[int, ...],
        layers_per_block: int,
        temporal_compression_ratio: int,
        norm_num_groups: int,
        mid_block_add_attention: bool,
        light_decoder: bool,
    ):
        super().__init__()
        self.gradient_checkpointing = False
        reversed_channels = list(reversed(block_out_channels))
        self.conv_in = YanCausalConv3d(latent_channels, reversed_channels[0], kernel_size=3)
        self.mid_block = YanMidBlock3D(reversed_channels[0], norm_num_groups, mid_block_add_attention)

        # The full (SD-style) decoder has one up block per encoder down block with `layers_per_block + 1` resnets.
        # The light decoder ("reducing a layer per up block") has `layers_per_block` resnets per up block, and its
        # last up block is replaced by a single-resnet block that ends in a pixel shuffle.
        num_ordinary_blocks = len(block_out_channels) - 1 if light_decoder else len(block_out_channels)
        num_layers = layers_per_block if light_decoder else layers_per_block + 1
        self.up_blocks = nn.ModuleList(
            [
                YanUpBlock3D(
                    reversed_channels[max(i - 1, 0)],
                    reversed_channels[i],
                    num_layers,
                    norm_num_groups,
                    # temporal upsampling in the first (deepest) block, mirroring the encoder
                    temporal=temporal_compression_ratio == 2 and i == 0,
                )
                for i in range(num_ordinary_blocks)
            ]
        )
        if light_decoder:
            self.up_blocks.append(
                YanPixelShuffleUpBlock3D(reversed_channels[-2], reversed_channels[-1], out_channels, norm_num_groups)
            )
            self.conv_norm_out = None
            self.conv_out = None
        else:
            self.conv_norm_out = YanGroupNorm(norm_num_groups, reversed_channels[-1], eps=1e-6)
            # per-frame output conv: at full resolution a temporal kernel would triple the most expensive conv
            self.conv_out = YanFrameConv2d(reversed_channels[-1], out_channels, kernel_size=3, padding=1)

    def forward(self, latents: torch.Tensor, stream: _StreamState | None = None) -> torch.Tensor:
        hidden_states = self.conv_in(latents.transpose(1, 2), stream)
        checkpoint = torch.is_grad_enabled() and self.gradient_checkpointing
        for block in [self.mid_block, *self.up_blocks]:
            if checkpoint:
                hidden_states = self._gradient_checkpointing_func(block, hidden_states, stream)
            else:
                hidden_states = block(hidden_states, stream)
        if self.conv_out is not None:
            hidden_states = self.conv_out(F.silu(self.conv_norm_out(hidden_states)))
        return hidden_states.transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


class AutoencoderKLYan(ModelMixin, AutoencoderMixin, ConfigMixin):
    r"""A causal video VAE with KL loss, spatio-temporal compression and a light, streamable decoder (Yan-Sim).

    Args:
        in_channels (`int`, defaults to 3): channels of the input video (3 for RGB, 1 for depth maps).
        out_channels (`int`, defaults to 3): channels of the decoded video.
        latent_channels (`int`, defaults to 16): latent channels (the paper's 16, up from SD's 4).
        block_out_channels (`tuple[int]`, defaults to `(128, 256, 512, 512, 512)`): width of each encoder down
            block (the decoder mirrors it). Every down block halves height and width, so there must be
            ``log2(spatial_compression_ratio)`` of them: 3, 4 or 5.
        layers_per_block (`int`, defaults to 2): resnets per encoder down block. The full decoder has one more per
            up block, the light decoder the same number.
        spatial_compression_ratio (`int`, defaults to 32): 8, 16 or 32; must equal ``2 ** len(block_out_channels)``.
        temporal_compression_ratio (`int`, defaults to 2): 1 or 2. With 2, the first frame is encoded alone and
            later frames in pairs: ``F = 1 + 2k`` frames <-> ``1 + k`` latent frames.
        light_decoder (`bool`, defaults to `True`): the paper's faster decoder (one resnet fewer per up block, and
            a final single-resnet up block ending in a pixel shuffle). `False` gives a symmetric SD-style decoder.
        norm_num_groups (`int`, defaults to 32): groups of every GroupNorm; must divide every block width.
        mid_block_add_attention (`bool`, defaults to `True`): per-frame spatial self-attention in the mid blocks.
        scaling_factor (`float`, defaults to 1.0) and shift_factor (`float`, defaults to 0.0): pipelines feed the
            denoiser ``(z - shift_factor) * scaling_factor``. Set them from the latent statistics of a trained VAE.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_yan import AutoencoderKLYan
    >>> vae = AutoencoderKLYan(
    ...     block_out_channels=(8, 8, 16), spatial_compression_ratio=8, latent_channels=4, norm_num_groups=4
    ... ).eval()
    >>> video = torch.rand(1, 3, 5, 32, 32) * 2 - 1  # [B, C, F, H, W], F = 1 + 2k
    >>> with torch.no_grad():
    ...     latents = vae.encode(video).latent_dist.mode()
    ...     frames = vae.decode(latents).sample
    >>> latents.shape, frames.shape
    (torch.Size([1, 4, 3, 4, 4]), torch.Size([1, 3, 5, 32, 32]))
    >>> # streaming: latent frames one at a time, same frames as the full decode
    >>> with torch.no_grad():
    ...     first, cache = vae.decode_stream(latents[:, :, :1])  # 1 frame
    ...     more, cache = vae.decode_stream(latents[:, :, 1:], cache)  # 2 frames per latent frame
    >>> torch.allclose(torch.cat([first, more], dim=2), frames, atol=1e-5)
    True

    ```
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 16,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 512),
        layers_per_block: int = 2,
        spatial_compression_ratio: int = 32,
        temporal_compression_ratio: int = 2,
        light_decoder: bool = True,
        norm_num_groups: int = 32,
        mid_block_add_attention: bool = True,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
    ):
        super().__init__()
        block_out_channels = tuple(block_out_channels)

        # 0. check the config: compression ratios, block count, group count
        if spatial_compression_ratio not in SUPPORTED_SPATIAL_COMPRESSION_RATIOS:
            raise ValueError(
                f"`spatial_compression_ratio` must be one of {SUPPORTED_SPATIAL_COMPRESSION_RATIOS}, "
                f"got {spatial_compression_ratio}."
            )
        if temporal_compression_ratio not in SUPPORTED_TEMPORAL_COMPRESSION_RATIOS:
            raise ValueError(
                f"`temporal_compression_ratio` must be one of {SUPPORTED_TEMPORAL_COMPRESSION_RATIOS}, "
                f"got {temporal_compression_ratio}."
            )
        if 2 ** len(block_out_channels) != spatial_compression_ratio:
            raise ValueError(
                f"Every down block halves height and width, so `spatial_compression_ratio={spatial_compression_ratio}` "
                f"needs {spatial_compression_ratio.bit_length() - 1} entries in `block_out_channels`, got "
                f"{len(block_out_channels)}: {block_out_channels}."
            )
        if layers_per_block < 1:
            raise ValueError(f"`layers_per_block` must be >= 1, got {layers_per_block}.")
        if latent_channels < 1:
            raise ValueError(f"`latent_channels` must be >= 1, got {latent_channels}.")
        bad_widths = [c for c in block_out_channels if c % norm_num_groups != 0]
        if bad_widths:
            raise ValueError(
                f"`norm_num_groups={norm_num_groups}` must divide every entry of `block_out_channels`, "
                f"but not {bad_widths}."
            )

        # 1. encoder: video -> mean and log-variance of the latents
        self.encoder = YanEncoder3D(
            in_channels=in_channels,
            latent_channels=latent_channels,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            temporal_compression_ratio=temporal_compression_ratio,
            norm_num_groups=norm_num_groups,
            mid_block_add_attention=mid_block_add_attention,
        )
        # no quant_conv / post_quant_conv: a 1x1 conv next to the encoder's and decoder's own output / input convs
        # adds no expressiveness, only time.

        # 2. decoder: latents -> video
        self.decoder = YanDecoder3D(
            latent_channels=latent_channels,
            out_channels=out_channels,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            temporal_compression_ratio=temporal_compression_ratio,
            norm_num_groups=norm_num_groups,
            mid_block_add_attention=mid_block_add_attention,
            light_decoder=light_decoder,
        )

        # 3. name every causal conv, the key of its frames in a streaming cache
        for name, module in self.named_modules():
            if isinstance(module, YanCausalConv3d):
                module.cache_key = name

        # 4. memory savers (off by default). Tiles are given in pixels; 256 px tiles overlap by a quarter.
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_size = 256
        self.tile_overlap_factor = 0.25

    # ------------------------------------------------------------------------------------------------------------
    # input checks
    # ------------------------------------------------------------------------------------------------------------

    def _check_video(self, sample: torch.Tensor, name: str) -> None:
        tc, sc = self.config.temporal_compression_ratio, self.config.spatial_compression_ratio
        if not isinstance(sample, torch.Tensor) or sample.ndim != 5:
            shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise ValueError(f"`{name}` must be a 5-D video tensor [B, C, F, H, W], got {shape}.")
        _, channels, num_frames, height, width = sample.shape
        if channels != self.config.in_channels:
            raise ValueError(
                f"`{name}` must have in_channels={self.config.in_channels} channels (dim 1 of [B, C, F, H, W]), "
                f"got {channels} (shape {tuple(sample.shape)})."
            )
        if num_frames < 1 or (num_frames - 1) % tc != 0:
            raise ValueError(
                f"`{name}` has {num_frames} frames, but the number of frames must be 1 + k * {tc} "
                f"(temporal_compression_ratio={tc}): the first frame is encoded alone, later ones in groups of {tc}."
            )
        if height % sc != 0 or width % sc != 0:
            raise ValueError(
                f"`{name}` height and width must be divisible by spatial_compression_ratio={sc}, got {height}x{width}."
            )

    def _check_latents(self, latents: torch.Tensor, name: str) -> None:
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"`{name}` must be a 5-D latent tensor [B, C, F, H, W], got {shape}.")
        if latents.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"`{name}` must have latent_channels={self.config.latent_channels} channels (dim 1), "
                f"got {latents.shape[1]} (shape {tuple(latents.shape)})."
            )
        if latents.shape[2] < 1:
            raise ValueError(f"`{name}` must have at least one latent frame, got shape {tuple(latents.shape)}.")

    # ------------------------------------------------------------------------------------------------------------
    # encode
    # ------------------------------------------------------------------------------------------------------------

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        tile = self.tile_sample_min_size
        if self.use_tiling and (x.shape[-1] > tile or x.shape[-2] > tile):
            return self._tiled_encode(x)
        return self.encoder(x)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Encode a video ``[B, C, 1 + k * tc, H, W]`` in ``[-1, 1]`` into a diagonal Gaussian over latents.

        The encoder is causal, so encoding a prefix of ``1 + j * tc`` frames gives the first ``1 + j`` latent
        frames of encoding the whole video.

        Returns:
            `AutoencoderKLOutput` whose `latent_dist` is a `DiagonalGaussianDistribution` over latents
            ``[B, latent_channels, 1 + k, H / sc, W / sc]``, or the tuple ``(latent_dist,)``.
        """
        self._check_video(x, "x")
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode(x_slice) for x_slice in x.split(1)])
        else:
            moments = self._encode(x)
        posterior = DiagonalGaussianDistribution(moments)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    # ------------------------------------------------------------------------------------------------------------
    # decode
    # ------------------------------------------------------------------------------------------------------------

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        tile = self.tile_sample_min_size // self.config.spatial_compression_ratio
        if self.use_tiling and (z.shape[-1] > tile or z.shape[-2] > tile):
            return self._tiled_decode(z)
        return self.decoder(z)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Decode latents ``[B, latent_channels, n, h, w]`` (the whole video from latent frame 0) to
        ``[B, out_channels, 1 + (n - 1) * tc, h * sc, w * sc]``.

        Returns:
            `DecoderOutput` with `sample`, or the tuple ``(sample,)``. ``sample`` is a transposed view of frame-major
            storage (``sample.transpose(1, 2)``, ``[B, F, C, H, W]``, is contiguous); call ``.contiguous()`` if you
            need ``[B, C, F, H, W]`` memory order.
        """
        self._check_latents(z, "z")
        if self.use_slicing and z.shape[0] > 1:
            decoded = torch.cat([self._decode(z_slice) for z_slice in z.split(1)])
        else:
            decoded = self._decode(z)
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    @apply_forward_hook
    def decode_stream(
        self, z_chunk: torch.Tensor, cache: YanVAEDecoderCache | None = None
    ) -> tuple[torch.Tensor, YanVAEDecoderCache]:
        """Decode the next ``n`` latent frames of a stream.

        Args:
            z_chunk: latents ``[B, latent_channels, n, h, w]``, ``n >= 1``.
            cache: the cache returned by the previous call, or `None` to start a stream at latent frame 0. It is
                never modified, so the same cache can continue several branches of a world.

        Returns:
            ``(frames, new_cache)``: ``frames`` is ``[B, out_channels, F, h * sc, w * sc]`` with
            ``F = 1 + (n - 1) * tc`` on the first call and ``n * tc`` later. Concatenating the frames of all calls
            gives the frames of one `decode` of all latents. Like `decode`, ``frames`` is a transposed view of
            frame-major storage (no copy is made to reorder it).

        Streaming ignores `enable_slicing` and `enable_tiling` (it decodes whole frames); the cache holds, per
        causal conv, ``kernel_t - 1`` frames, whatever the length of the stream.
        """
        self._check_latents(z_chunk, "z_chunk")
        if cache is not None and not isinstance(cache, YanVAEDecoderCache):
            raise ValueError(f"`cache` must be a YanVAEDecoderCache or None, got {type(cache).__name__}.")
        is_first = cache is None or not cache.first_frame_decoded
        if is_first and self.use_tiling:
            # once per stream, not per frame
            logger.info("`decode_stream` decodes whole frames; `enable_tiling` applies to `encode` / `decode` only.")
        if not is_first:
            expected = self.decoder.conv_in.cache_key
            past = cache.conv_states.get(expected)
            if past is None:
                raise ValueError("`cache` was not made by this model's `decode_stream` (no state for its convs).")
            if past.shape[0] != z_chunk.shape[0] or past.shape[-2:] != z_chunk.shape[-2:]:
                raise ValueError(
                    f"`z_chunk` of shape {tuple(z_chunk.shape)} does not continue the cached stream, whose batch "
                    f"size is {past.shape[0]} and latent size {tuple(past.shape[-2:])}."
                )
            if past.device != z_chunk.device or past.dtype != z_chunk.dtype:
                raise ValueError(
                    f"`cache` is on {past.device} / {past.dtype} but `z_chunk` on {z_chunk.device} / "
                    f"{z_chunk.dtype}; move it with `cache.to(device, dtype)`."
                )

        stream = _StreamState(past=None if is_first else cache.conv_states, is_first=is_first)
        frames = self.decoder(z_chunk, stream)
        new_cache = YanVAEDecoderCache(
            conv_states=stream.present,
            first_frame_decoded=True,
            num_latent_frames=(0 if is_first else cache.num_latent_frames) + z_chunk.shape[2],
        )
        return frames, new_cache

    # ------------------------------------------------------------------------------------------------------------
    # tiling
    # ------------------------------------------------------------------------------------------------------------

    def enable_tiling(self, tile_sample_min_size: int | None = None, tile_overlap_factor: float | None = None):
        """Encode and decode in overlapping spatial tiles (all frames at once), blended linearly at the seams.

        Args:
            tile_sample_min_size: tile size in pixels, a multiple of ``spatial_compression_ratio``.
            tile_overlap_factor: fraction of a tile shared with its neighbour, in ``[0, 1)``.
        """
        sc = self.config.spatial_compression_ratio
        if tile_sample_min_size is not None:
            if tile_sample_min_size < sc or tile_sample_min_size % sc != 0:
                raise ValueError(
                    f"`tile_sample_min_size` must be a positive multiple of spatial_compression_ratio={sc}, "
                    f"got {tile_sample_min_size}."
                )
            self.tile_sample_min_size = tile_sample_min_size
        if tile_overlap_factor is not None:
            if not 0.0 <= tile_overlap_factor < 1.0:
                raise ValueError(f"`tile_overlap_factor` must be in [0, 1), got {tile_overlap_factor}.")
            self.tile_overlap_factor = tile_overlap_factor
        self.use_tiling = True

    def _tile_geometry(self) -> tuple[int, int, int]:
        """(tile size in latents, stride between tiles in latents, blend width in pixels)."""
        sc = self.config.spatial_compression_ratio
        tile_latent = self.tile_sample_min_size // sc
        stride_latent = max(1, int(tile_latent * (1 - self.tile_overlap_factor)))
        return tile_latent, stride_latent, (tile_latent - stride_latent) * sc

    @staticmethod
    def _blend(a: torch.Tensor, b: torch.Tensor, blend_extent: int, dim: int) -> torch.Tensor:
        # Adapted from diffusers.models.autoencoders.autoencoder_kl.AutoencoderKL.blend_v / blend_h (vectorised)
        blend_extent = min(a.shape[dim], b.shape[dim], blend_extent)
        if blend_extent == 0:
            return b
        shape = [1] * b.ndim
        shape[dim] = blend_extent
        weight = (torch.arange(blend_extent, device=b.device, dtype=b.dtype) / blend_extent).view(shape)
        head = a.narrow(dim, a.shape[dim] - blend_extent, blend_extent) * (1 - weight)
        head = head + b.narrow(dim, 0, blend_extent) * weight
        return torch.cat([head, b.narrow(dim, blend_extent, b.shape[dim] - blend_extent)], dim=dim)

    def _stitch(self, rows: list[list[torch.Tensor]], blend_extent: int, row_limit: int) -> torch.Tensor:
        result_rows = []
        for i, row in enumerate(rows):
            result_row = []
            for j, tile in enumerate(row):
                # blend the tile above and the tile to the left into this one, keep its non-overlapping part
                if i > 0:
                    tile = self._blend(rows[i - 1][j], tile, blend_extent, dim=-2)
                if j > 0:
                    tile = self._blend(row[j - 1], tile, blend_extent, dim=-1)
                result_row.append(tile[..., :row_limit, :row_limit])
            result_rows.append(torch.cat(result_row, dim=-1))
        return torch.cat(result_rows, dim=-2)

    # Adapted from diffusers.models.autoencoders.autoencoder_kl.AutoencoderKL._tiled_encode (video tiles)
    def _tiled_encode(self, x: torch.Tensor) -> torch.Tensor:
        sc = self.config.spatial_compression_ratio
        tile_latent, stride_latent, _ = self._tile_geometry()
        tile, stride = tile_latent * sc, stride_latent * sc
        rows = [
            [self.encoder(x[..., i : i + tile, j : j + tile]) for j in range(0, x.shape[-1], stride)]
            for i in range(0, x.shape[-2], stride)
        ]
        moments = self._stitch(rows, tile_latent - stride_latent, stride_latent)
        return moments[..., : x.shape[-2] // sc, : x.shape[-1] // sc]

    # Adapted from diffusers.models.autoencoders.autoencoder_kl.AutoencoderKL.tiled_decode (video tiles)
    def _tiled_decode(self, z: torch.Tensor) -> torch.Tensor:
        sc = self.config.spatial_compression_ratio
        tile_latent, stride_latent, blend_extent = self._tile_geometry()
        rows = [
            [
                self.decoder(z[..., i : i + tile_latent, j : j + tile_latent])
                for j in range(0, z.shape[-1], stride_latent)
            ]
            for i in range(0, z.shape[-2], stride_latent)
        ]
        decoded = self._stitch(rows, blend_extent, stride_latent * sc)
        return decoded[..., : z.shape[-2] * sc, : z.shape[-1] * sc]

    # ------------------------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------------------------

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple:
        """Reconstruct a video: encode, take the posterior mode (or a sample), decode."""
        # 1. encode
        posterior = self.encode(sample).latent_dist
        # 2. latents
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        # 3. decode
        decoded = self.decode(z).sample
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)
