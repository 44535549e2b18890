"""Yan-Sim denoising UNet: an SD-style UNet over latent videos with action cross-attention and causal temporal
attention backed by a bounded, functional KV cache.

Read top down: helpers (frame rotary embedding, causal mask), the KV cache and output dataclasses, the temporal
attention processor, the attention block and the down/mid/up blocks, then the public `YanSimUNetModel`.

Design notes (see `DESIGN.md` §1, §4, §5 and the seed's "Yan-Sim" slides):

- Every 2-D part (ResNets, spatial/action/text attention, down/up sampling) sees frames folded into the batch, so a
  frame only meets other frames in the causal temporal attention. This is what makes the model causal and lets the
  pipeline cache past frames.
- Temporal attention uses rotary position embeddings on the frame axis, with positions counted from the start of
  the attended window (cached frames, then the frames of this call). Rotary attention scores depend only on the
  distance between two frames, so the absolute frame index never enters the network and a world can run forever
  with a bounded cache.
- Per-frame timesteps (Diffusion Forcing): each frame gets its own timestep embedding.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.attention_processor import Attention, AttentionProcessor, AttnProcessor
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.utils import BaseOutput, logging
from torch import nn

from ...actions import ActionSpace
from ..embeddings import YanActionEncoder


logger = logging.get_logger(__name__)  # pylint: disable=invalid-name


# ----------------------------------------------------------------------------------------------------- helpers


def get_frame_rotary_embedding(
    num_positions: int, head_dim: int, theta: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables ``[num_positions, head_dim]`` (float32) for rotary embeddings on the frame axis.

    Positions are ``0 .. num_positions - 1`` counted from the oldest frame in the attended window, never absolute
    frame indices. Uses the "rotate half" layout: channel ``i`` and ``i + head_dim // 2`` form a rotation pair.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.arange(num_positions, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_frame_rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [..., num_frames, head_dim]`` by ``cos/sin [num_frames, head_dim]`` (computed in float32)."""
    x_float = x.float()
    x1, x2 = x_float.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x_float * cos + rotated * sin).to(x.dtype)


def get_causal_frame_mask(num_past_frames: int, num_frames: int, device: torch.device) -> torch.Tensor:
    """Boolean mask ``[num_frames, num_past_frames + num_frames]``: frame ``i`` of this call sees every cached frame
    and the frames ``0 .. i`` of this call (``True`` = may attend)."""
    query_positions = torch.arange(num_frames, device=device)[:, None] + num_past_frames
    key_positions = torch.arange(num_past_frames + num_frames, device=device)[None, :]
    return key_positions <= query_positions


# ----------------------------------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class YanSimKVCache:
    """Keys and values of past *clean* frames for every temporal attention layer of a `YanSimUNetModel`.

    The cache is an immutable value: the model never changes it, it returns a new one. Keep an old cache to branch a
    world (try two action sequences from the same state).

    Args:
        keys (`tuple[torch.Tensor, ...]`):
            One tensor per temporal attention layer (in the order the model runs them), shaped
            `[batch_size * height * width, num_heads, num_frames, head_dim]` at that layer's resolution. Keys are
            stored *before* the rotary embedding, which is applied at attention time with positions relative to the
            attended window, so cached keys never need recomputation when the window slides.
        values (`tuple[torch.Tensor, ...]`): Same layout as `keys`.
        num_frames (`int`): Number of cached frames, at most the model's `temporal_cache_size`.
        batch_size (`int`): Batch size the cache was built for.
        latent_size (`tuple[int, int]`): Latent `(height, width)` the cache was built for.
        fingerprint (`str`): Describes the model configuration that produced the cache; a model refuses a cache
            with another fingerprint.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    num_frames: int
    batch_size: int
    latent_size: tuple[int, int]
    fingerprint: str

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached tensors, in bytes."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def repeat_batch(self, times: int) -> "YanSimKVCache":
        """The cache for a batch of ``times`` copies of this batch, one after another (e.g. ``2`` for a guided
        call that runs a conditional and an unconditional half on the same past)."""
        if times < 1:
            raise ValueError(f"`times` must be >= 1, got {times}.")
        return self._with(
            tuple(t.repeat(times, 1, 1, 1) for t in self.keys),
            tuple(t.repeat(times, 1, 1, 1) for t in self.values),
            self.batch_size * times,
        )

    def select_batch(self, start: int, stop: int) -> "YanSimKVCache":
        """The cache of worlds ``start .. stop - 1`` of the batch."""
        if not 0 <= start < stop <= self.batch_size:
            raise ValueError(f"`start`={start}, `stop`={stop} must satisfy 0 <= start < stop <= {self.batch_size}.")

        def rows(t: torch.Tensor) -> torch.Tensor:
            per_world = t.shape[0] // self.batch_size  # rows are batch-major: [batch * height * width, ...]
            return t[start * per_world : stop * per_world]

        return self._with(tuple(map(rows, self.keys)), tuple(map(rows, self.values)), stop - start)

    def _with(self, keys, values, batch_size: int) -> "YanSimKVCache":
        return YanSimKVCache(
            keys=keys,
            values=values,
            num_frames=self.num_frames,
            batch_size=batch_size,
            latent_size=self.latent_size,
            fingerprint=self.fingerprint,
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "YanSimKVCache":
        """A copy of the cache on another device and/or dtype."""
        return self._with(
            tuple(k.to(device=device, dtype=dtype) for k in self.keys),
            tuple(v.to(device=device, dtype=dtype) for v in self.values),
            self.batch_size,
        )


@dataclass
class YanSimUNetOutput(BaseOutput):
    """
    Output of `YanSimUNetModel`.

    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, num_frames, height, width)`):
            The model prediction (epsilon, v or x0, as the scheduler was trained with) for every frame.
        kv_cache (`YanSimKVCache`, *optional*):
            The input cache extended with the first `cache_frames` frames of the call (bounded to
            `temporal_cache_size` frames), the unchanged input cache when `cache_frames=0`, or `None` when neither
            was asked for.
    """

    sample: torch.Tensor
    kv_cache: YanSimKVCache | None = None


# ----------------------------------------------------------------------------------------- attention processor


class YanSimTemporalAttnProcessor2_0:
    r"""
    Processor for the causal temporal attention of `YanSimUNetModel` (scaled dot-product attention, PyTorch 2).

    Works on `hidden_states [batch_size * height * width, num_frames, channels]` (one sequence of frames per spatial
    position). On top of `AttnProcessor2_0` it

    - prepends the cached keys/values of past frames (`past_key_value`),
    - applies the frame rotary embedding `rotary_emb = (cos, sin)` for the whole attended window (cached frames then
      the frames of this call) to keys, and its last `num_frames` rows to queries,
    - takes a boolean `attention_mask [num_frames, num_past + num_frames]` (the causal frame mask), and
    - returns `(hidden_states, (key, value))` where `key`/`value` are this call's pre-rotary keys and values
      `[batch_size * height * width, heads, num_frames, head_dim]`, ready to be cached.
    """

    def __init__(self):
        if not hasattr(F, "scaled_dot_product_attention"):
            raise ImportError(f"{self.__class__.__name__} requires PyTorch 2.0 or newer.")

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if encoder_hidden_states is not None:
            raise ValueError("Temporal attention is self-attention over frames; `encoder_hidden_states` must be None.")
        batch_size, num_frames, _ = hidden_states.shape

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, num_frames, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, num_frames, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, num_frames, attn.heads, head_dim).transpose(1, 2)

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        new_key_value = (key, value)
        if past_key_value is not None:
            key = torch.cat([past_key_value[0].to(key.dtype), key], dim=2)
            value = torch.cat([past_key_value[1].to(value.dtype), value], dim=2)

        if rotary_emb is not None:
            cos, sin = rotary_emb
            query = apply_frame_rotary_embedding(query, cos[-num_frames:], sin[-num_frames:])
            key = apply_frame_rotary_embedding(key, cos, sin)

        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, num_frames, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        # linear proj
        hidden_states = attn.to_out[0](hidden_states)
        # dropout
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states, new_key_value


def _is_temporal_processor(processor) -> bool:
    return isinstance(processor, YanSimTemporalAttnProcessor2_0)


# ------------------------------------------------------------------------------------------------------ blocks


# Adapted from diffusers.models.transformers.transformer_2d.Transformer2DModel and
# diffusers.models.attention.BasicTransformerBlock
class YanSimAttentionBlock(nn.Module):
    r"""
    The Yan-Sim attention block on `[batch_size * num_frames, channels, height, width]` feature maps.

    Like SD's `Transformer2DModel` with one `BasicTransformerBlock` (group norm, linear `proj_in`, pre-norm
    residual sub-layers, `proj_out`, outer residual), with the sub-layers, in order:

    1. spatial self-attention within a frame;
    2. action cross-attention over that frame's action tokens;
    3. text cross-attention (only when `text_cross_attention=True`, for Yan-Edit);
    4. causal temporal attention across frames at each spatial position (rotary positions, KV cache);
    5. feed-forward (GEGLU).
    """

    def __init__(
        self,
        channels: int,
        attention_head_dim: int,
        action_embed_dim: int,
        text_cross_attention: bool,
        text_embed_dim: int,
        norm_num_groups: int,
        norm_eps: float,
    ):
        super().__init__()
        num_heads = channels // attention_head_dim

        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=channels, eps=norm_eps, affine=True)
        self.proj_in = nn.Linear(channels, channels)

        # 1. spatial self-attention
        self.norm_spatial = nn.LayerNorm(channels)
        self.attn_spatial = Attention(query_dim=channels, heads=num_heads, dim_head=attention_head_dim, bias=False)

        # 2. action cross-attention
        self.norm_action = nn.LayerNorm(channels)
        self.attn_action = Attention(
            query_dim=channels,
            cross_attention_dim=action_embed_dim,
            heads=num_heads,
            dim_head=attention_head_dim,
            bias=False,
        )

        # 3. optional text cross-attention
        if text_cross_attention:
            self.norm_text = nn.LayerNorm(channels)
            self.attn_text = Attention(
                query_dim=channels,
                cross_attention_dim=text_embed_dim,
                heads=num_heads,
                dim_head=attention_head_dim,
                bias=False,
            )
            # zero-init: a text branch added to a trained simulator (Yan-Edit phase 1) starts as the identity
            nn.init.zeros_(self.attn_text.to_out[0].weight)
            nn.init.zeros_(self.attn_text.to_out[0].bias)
        else:
            self.norm_text = None
            self.attn_text = None

        # 4. causal temporal attention
        self.norm_temporal = nn.LayerNorm(channels)
        self.attn_temporal = Attention(
            query_dim=channels,
            heads=num_heads,
            dim_head=attention_head_dim,
            bias=False,
            processor=YanSimTemporalAttnProcessor2_0(),
        )
        # zero-init: a new model starts as a per-frame image model, frames mix in only as training asks for it
        nn.init.zeros_(self.attn_temporal.to_out[0].weight)
        nn.init.zeros_(self.attn_temporal.to_out[0].bias)

        # 5. feed-forward
        self.norm_ff = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, activation_fn="geglu")

        self.proj_out = nn.Linear(channels, channels)

    def forward(
        self,
        hidden_states: torch.Tensor,
        num_frames: int,
        action_tokens: torch.Tensor,
        text_states: torch.Tensor | None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        temporal_mask: torch.Tensor,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch_frames, channels, height, width = hidden_states.shape
        batch_size = batch_frames // num_frames
        residual = hidden_states

        hidden_states = self.norm(hidden_states)
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, channels)
        hidden_states = self.proj_in(hidden_states)

        # 1. spatial self-attention
        hidden_states = self.attn_spatial(self.norm_spatial(hidden_states)) + hidden_states

        # 2. action cross-attention
        hidden_states = (
            self.attn_action(self.norm_action(hidden_states), encoder_hidden_states=action_tokens) + hidden_states
        )

        # 3. text cross-attention
        if self.attn_text is not None:
            hidden_states = (
                self.attn_text(self.norm_text(hidden_states), encoder_hidden_states=text_states) + hidden_states
            )

        # 4. causal temporal attention: [B * F, HW, C] -> [B * HW, F, C]
        hidden_states = (
            hidden_states.view(batch_size, num_frames, height * width, channels)
            .transpose(1, 2)
            .reshape(batch_size * height * width, num_frames, channels)
        )
        attn_output, key_value = self.attn_temporal(
            self.norm_temporal(hidden_states),
            attention_mask=temporal_mask,
            rotary_emb=rotary_emb,
            past_key_value=past_key_value,
        )
        hidden_states = attn_output + hidden_states
        hidden_states = (
            hidden_states.view(batch_size, height * width, num_frames, channels)
            .transpose(1, 2)
            .reshape(batch_frames, height * width, channels)
        )

        # 5. feed-forward
        hidden_states = self.ff(self.norm_ff(hidden_states)) + hidden_states

        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.view(batch_frames, height, width, channels).permute(0, 3, 1, 2)
        return hidden_states + residual, key_value


@dataclass
class _FrameConditioning:
    """Per-call inputs shared by every attention block (internal)."""

    num_frames: int
    action_tokens: torch.Tensor  # [B * F, num_action_tokens, action_embed_dim]
    text_states: torch.Tensor | None  # [B * F, L, text_embed_dim]
    rotary_emb: tuple[torch.Tensor, torch.Tensor]  # cos, sin [num_past + F, head_dim]
    temporal_mask: torch.Tensor  # [F, num_past + F] bool


def _run_attention_block(
    owner: nn.Module,
    block: YanSimAttentionBlock,
    hidden_states: torch.Tensor,
    cond: _FrameConditioning,
    past_key_value: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    args = (
        hidden_states,
        cond.num_frames,
        cond.action_tokens,
        cond.text_states,
        cond.rotary_emb,
        cond.temporal_mask,
        past_key_value,
    )
    if torch.is_grad_enabled() and owner.gradient_checkpointing:
        return owner._gradient_checkpointing_func(block, *args)
    return block(*args)


def _run_resnet(owner: nn.Module, resnet: ResnetBlock2D, hidden_states: torch.Tensor, temb: torch.Tensor):
    if torch.is_grad_enabled() and owner.gradient_checkpointing:
        return owner._gradient_checkpointing_func(resnet, hidden_states, temb)
    return resnet(hidden_states, temb)


# Adapted from diffusers.models.unets.unet_2d_blocks.CrossAttnDownBlock2D
class YanSimDownBlock(nn.Module):
    """ResNet blocks (each followed by an attention block when `has_attention`), then an optional downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        has_attention: bool,
        add_downsample: bool,
        attention_kwargs: dict,
        norm_num_groups: int,
        norm_eps: float,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_channels=in_channels if i == 0 else out_channels,
                    out_channels=out_channels,
                    temb_channels=temb_channels,
                    groups=norm_num_groups,
                    eps=norm_eps,
                )
                for i in range(num_layers)
            ]
        )
        self.attentions = (
            nn.ModuleList([YanSimAttentionBlock(out_channels, **attention_kwargs) for _ in range(num_layers)])
            if has_attention
            else None
        )
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=1, name="op")])
            if add_downsample
            else None
        )
        self.gradient_checkpointing = False

    def forward(self, hidden_states, temb, cond: _FrameConditioning, past_key_values: list):
        output_states = ()
        key_values = []
        for i, resnet in enumerate(self.resnets):
            hidden_states = _run_resnet(self, resnet, hidden_states, temb)
            if self.attentions is not None:
                hidden_states, key_value = _run_attention_block(
                    self, self.attentions[i], hidden_states, cond, past_key_values[len(key_values)]
                )
                key_values.append(key_value)
            output_states = output_states + (hidden_states,)

        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            output_states = output_states + (hidden_states,)

        return hidden_states, output_states, key_values


# Adapted from diffusers.models.unets.unet_2d_blocks.UNetMidBlock2DCrossAttn
class YanSimMidBlock(nn.Module):
    """ResNet, attention block, ResNet (the mid block always has attention)."""

    def __init__(
        self, channels: int, temb_channels: int, attention_kwargs: dict, norm_num_groups: int, norm_eps: float
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            [
                ResnetBlock2D(
                    in_channels=channels,
                    out_channels=channels,
                    temb_channels=temb_channels,
                    groups=norm_num_groups,
                    eps=norm_eps,
                )
                for _ in range(2)
            ]
        )
        self.attentions = nn.ModuleList([YanSimAttentionBlock(channels, **attention_kwargs)])
        self.gradient_checkpointing = False

    def forward(self, hidden_states, temb, cond: _FrameConditioning, past_key_values: list):
        hidden_states = _run_resnet(self, self.resnets[0], hidden_states, temb)
        hidden_states, key_value = _run_attention_block(
            self, self.attentions[0], hidden_states, cond, past_key_values[0]
        )
        hidden_states = _run_resnet(self, self.resnets[1], hidden_states, temb)
        return hidden_states, [key_value]


# Adapted from diffusers.models.unets.unet_2d_blocks.CrossAttnUpBlock2D
class YanSimUpBlock(nn.Module):
    """ResNet blocks on [hidden, skip] (each followed by an attention block when `has_attention`), then an optional
    upsampler."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        has_attention: bool,
        add_upsample: bool,
        attention_kwargs: dict,
        norm_num_groups: int,
        norm_eps: float,
    ):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            res_skip_channels = in_channels if (i == num_layers - 1) else out_channels
            resnet_in_channels = prev_output_channels if i == 0 else out_channels
            resnets.append(
                ResnetBlock2D(
                    in_channels=resnet_in_channels + res_skip_channels,
                    out_channels=out_channels,
                    temb_channels=temb_channels,
                    groups=norm_num_groups,
                    eps=norm_eps,
                )
            )
        self.resnets = nn.ModuleList(resnets)
        self.attentions = (
            nn.ModuleList([YanSimAttentionBlock(out_channels, **attention_kwargs) for _ in range(num_layers)])
            if has_attention
            else None
        )
        self.upsamplers = (
            nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
            if add_upsample
            else None
        )
        self.gradient_checkpointing = False

    def forward(self, hidden_states, res_hidden_states_tuple, temb, cond: _FrameConditioning, past_key_values: list):
        key_values = []
        for i, resnet in enumerate(self.resnets):
            res_hidden_states = res_hidden_states_tuple[-1]
            res_hidden_states_tuple = res_hidden_states_tuple[:-1]
            hidden_states = torch.cat([hidden_states, res_hidden_states], dim=1)
            hidden_states = _run_resnet(self, resnet, hidden_states, temb)
            if self.attentions is not None:
                hidden_states, key_value = _run_attention_block(
                    self, self.attentions[i], hidden_states, cond, past_key_values[len(key_values)]
                )
                key_values.append(key_value)

        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states)

        return hidden_states, key_values


# ---------------------------------------------------------------------------------------------------- the model


class YanSimUNetModel(ModelMixin, ConfigMixin, AttentionMixin):
    r"""
    The Yan-Sim denoiser: an SD-style UNet over latent videos, conditioned on per-frame timesteps and actions, with
    causal temporal attention and a bounded KV cache for real-time, endless next-frame simulation.

    Frames are folded into the batch for every 2-D part; each attention block holds spatial self-attention, action
    cross-attention, optional text cross-attention, causal temporal attention with relative (rotary) frame positions,
    and a feed-forward (see `YanSimAttentionBlock`).

    Parameters:
        sample_size (`int` or `tuple[int, int]`, *optional*):
            Latent height (or `(height, width)`) the model was trained at; informational, used by pipelines for the
            default size. Any size divisible by `2 ** (len(block_out_channels) - 1)` works.
        in_channels (`int`, defaults to 16): Latent channels of the input (16 for `AutoencoderKLYan`).
        out_channels (`int`, defaults to 16): Channels of the prediction.
        block_out_channels (`tuple[int]`, defaults to `(320, 640, 1280, 1280)`): Channels per resolution level (SD-1.5).
        layers_per_block (`int`, defaults to 2): ResNet (+ attention) layers per down level; up levels have one more.
        attention_levels (`tuple[bool]`, defaults to `(True, True, True, False)`):
            Which down levels hold attention blocks (mirrored for the up levels, SD-1.5 layout). The mid block always
            has one.
        attention_head_dim (`int`, defaults to 64):
            Width of *one* attention head (not the number of heads, unlike SD's config field of the same name). Every
            level uses `channels // attention_head_dim` heads, so every channel count must be divisible by it, and it
            must be even (rotary embedding).
        norm_num_groups (`int`, defaults to 32): Groups of every GroupNorm.
        norm_eps (`float`, defaults to 1e-5): Epsilon of every GroupNorm (SD-1.5's value).
        action_space (`dict`, *optional*):
            `ActionSpace.to_dict()` of the buttons/axes the model is conditioned on; `None` means the 8 Doom buttons.
            The full dict is stored in the config so a saved model knows its action space.
        action_embed_dim (`int`, defaults to 768): Width of the action tokens (768 in the paper).
        num_action_tokens (`int`, defaults to 1): Action tokens per frame (the paper uses one).
        text_cross_attention (`bool`, defaults to `False`): Add the text cross-attention branch (Yan-Edit).
        text_embed_dim (`int`, defaults to 768): Width of the text encoder states when the text branch is on.
        temporal_cache_size (`int`, defaults to 16): Most past clean frames kept in the KV cache.
        temporal_rope_theta (`float`, defaults to 10000.0):
            Base of the rotary frame-position frequencies. The usual LLM value; with windows of tens of frames the
            slow channels barely rotate and act as position-free content channels.
        null_action (`list[float]`, *optional*):
            The encoded action that stands for "no particular action": the unconditional branch of action guidance
            in the pipeline, and what training replaces a clip's actions with under action dropout. `None` means the
            zero action (no button held). `train_yan_sim.py --null_action mean` stores the training data's mean
            action here, which approximates the marginal over actions.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_yan import YanSimUNetModel

    >>> unet = YanSimUNetModel(
    ...     sample_size=4,
    ...     block_out_channels=(32, 64),
    ...     layers_per_block=1,
    ...     attention_levels=(True, True),
    ...     attention_head_dim=16,
    ...     norm_num_groups=8,
    ...     action_embed_dim=32,
    ...     temporal_cache_size=8,
    ... )
    >>> # one pipeline step: the last clean frame (t=0) then 3 noisy frames at staggered noise levels
    >>> sample = torch.randn(1, 16, 4, 4, 4)
    >>> actions = unet.action_space.encode_sequence(["NOOP", "MOVE_FORWARD", "MOVE_FORWARD", "TURN_LEFT"])[None]
    >>> out = unet(sample, timestep=torch.tensor([[0, 750, 500, 250]]), actions=actions, cache_frames=1)
    >>> out.sample.shape, out.kv_cache.num_frames
    (torch.Size([1, 16, 4, 4, 4]), 1)
    >>> # the next step attends to the cached clean frame
    >>> out = unet(sample[:, :, 1:], timestep=torch.tensor([[0, 750, 500]]), kv_cache=out.kv_cache, cache_frames=1)
    >>> out.kv_cache.num_frames
    2
    ```
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["YanSimAttentionBlock", "ResnetBlock2D"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 16,
        out_channels: int = 16,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (True, True, True, False),
        attention_head_dim: int = 64,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        action_space: dict | None = None,
        action_embed_dim: int = 768,
        num_action_tokens: int = 1,
        text_cross_attention: bool = False,
        text_embed_dim: int = 768,
        temporal_cache_size: int = 16,
        temporal_rope_theta: float = 10000.0,
        null_action: list[float] | None = None,
    ):
        super().__init__()

        # 0. check the configuration
        if len(attention_levels) != len(block_out_channels):
            raise ValueError(
                f"`attention_levels` must have one entry per level of `block_out_channels` ({len(block_out_channels)}),"
                f" got {attention_levels}."
            )
        if attention_head_dim < 2 or attention_head_dim % 2 != 0:
            raise ValueError(
                f"`attention_head_dim` must be a positive even number (rotary), got {attention_head_dim}."
            )
        for channels in block_out_channels:
            if channels % attention_head_dim != 0 or channels % norm_num_groups != 0:
                raise ValueError(
                    f"Every entry of `block_out_channels` {tuple(block_out_channels)} must be divisible by"
                    f" `attention_head_dim` ({attention_head_dim}) and `norm_num_groups` ({norm_num_groups})."
                )
        if temporal_cache_size < 1:
            raise ValueError(f"`temporal_cache_size` must be >= 1, got {temporal_cache_size}.")

        # store the full action space (with its key bindings) so that a saved model knows its buttons
        self.action_space = ActionSpace.from_dict(action_space)
        self.register_to_config(action_space=self.action_space.to_dict())
        self.action_dim = self.action_space.dim
        if null_action is not None:
            values = torch.as_tensor(null_action, dtype=torch.float32).flatten()
            if values.numel() != self.action_dim or not torch.isfinite(values).all():
                raise ValueError(
                    f"`null_action` must be {self.action_dim} finite numbers (one per entry of the action space"
                    f" {list(self.action_space.names)}), got {null_action!r}."
                )
            self.register_to_config(null_action=[float(v) for v in values])

        time_embed_dim = block_out_channels[0] * 4  # SD's choice: 4x the first level's channels
        attention_kwargs = {
            "attention_head_dim": attention_head_dim,
            "action_embed_dim": action_embed_dim,
            "text_cross_attention": text_cross_attention,
            "text_embed_dim": text_embed_dim,
            "norm_num_groups": norm_num_groups,
            "norm_eps": norm_eps,
        }
        num_levels = len(block_out_channels)

        # 1. input convolution
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)

        # 2. per-frame timestep embedding (SD-1.5's sinusoidal layout: cos first, no frequency shift)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)

        # 3. action encoder: encoded action vector -> action tokens (shared module with Yan-Gen)
        self.action_encoder = YanActionEncoder(
            self.action_dim, embed_dim=action_embed_dim, num_tokens=num_action_tokens
        )

        # 4. down
        self.down_blocks = nn.ModuleList([])
        output_channel = block_out_channels[0]
        for i in range(num_levels):
            input_channel = output_channel
            output_channel = block_out_channels[i]
            self.down_blocks.append(
                YanSimDownBlock(
                    in_channels=input_channel,
                    out_channels=output_channel,
                    temb_channels=time_embed_dim,
                    num_layers=layers_per_block,
                    has_attention=attention_levels[i],
                    add_downsample=i < num_levels - 1,
                    attention_kwargs=attention_kwargs,
                    norm_num_groups=norm_num_groups,
                    norm_eps=norm_eps,
                )
            )

        # 5. mid
        self.mid_block = YanSimMidBlock(
            block_out_channels[-1], time_embed_dim, attention_kwargs, norm_num_groups, norm_eps
        )

        # 6. up (mirror of down, one more layer per level to consume the downsampler's skip)
        self.up_blocks = nn.ModuleList([])
        reversed_channels = list(reversed(block_out_channels))
        reversed_attention = list(reversed(attention_levels))
        output_channel = reversed_channels[0]
        for i in range(num_levels):
            prev_output_channel = output_channel
            output_channel = reversed_channels[i]
            input_channel = reversed_channels[min(i + 1, num_levels - 1)]
            self.up_blocks.append(
                YanSimUpBlock(
                    in_channels=input_channel,
                    prev_output_channels=prev_output_channel,
                    out_channels=output_channel,
                    temb_channels=time_embed_dim,
                    num_layers=layers_per_block + 1,
                    has_attention=reversed_attention[i],
                    add_upsample=i < num_levels - 1,
                    attention_kwargs=attention_kwargs,
                    norm_num_groups=norm_num_groups,
                    norm_eps=norm_eps,
                )
            )

        # 7. output
        self.conv_norm_out = nn.GroupNorm(num_channels=block_out_channels[0], num_groups=norm_num_groups, eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

        # 8. KV cache layout: one entry per temporal attention layer, in the order forward runs them
        self.num_temporal_layers = sum(1 for m in self.modules() if isinstance(m, YanSimAttentionBlock))
        self.kv_cache_fingerprint = (
            f"{self.__class__.__name__}(block_out_channels={tuple(block_out_channels)},"
            f" layers_per_block={layers_per_block}, attention_levels={tuple(attention_levels)},"
            f" attention_head_dim={attention_head_dim}, temporal_layers={self.num_temporal_layers})"
        )

    def null_action_vector(self) -> torch.Tensor:
        """The config's ``null_action`` as a float tensor ``[action_dim]`` (zeros when none is set)."""
        if self.config.null_action is None:
            return torch.zeros(self.action_dim)
        return torch.tensor(self.config.null_action, dtype=torch.float32)

    # ------------------------------------------------------------------------------------- attention processors

    def _temporal_processor_names(self) -> list[str]:
        return [name for name in self.attn_processors if name.endswith("attn_temporal.processor")]

    def set_attn_processor(self, processor: AttentionProcessor | dict[str, AttentionProcessor]):
        r"""
        Sets the attention processors, as in diffusers' `AttentionMixin.set_attn_processor`, with one difference:
        the temporal attention layers (`*.attn_temporal.processor`) need a `YanSimTemporalAttnProcessor2_0` (or a
        subclass) for the KV cache and rotary positions.

        - A single standard processor (e.g. `AttnProcessor2_0()`) is set on the spatial, action and text layers;
          the temporal layers keep theirs. A single `YanSimTemporalAttnProcessor2_0` is set on the temporal layers
          only.
        - A dict must name every layer, and its temporal entries must be `YanSimTemporalAttnProcessor2_0`.
        """
        temporal_names = self._temporal_processor_names()
        current = self.attn_processors
        if isinstance(processor, dict):
            wrong = [n for n in temporal_names if n in processor and not _is_temporal_processor(processor[n])]
            if wrong:
                raise ValueError(
                    f"Temporal attention layers need a `YanSimTemporalAttnProcessor2_0`, got"
                    f" {type(processor[wrong[0]]).__name__} for {wrong[0]!r} (and {len(wrong) - 1} more)."
                )
            processor = dict(processor)
        elif _is_temporal_processor(processor):
            processor = {n: (processor if n in temporal_names else p) for n, p in current.items()}
        else:
            logger.info(
                f"Setting {type(processor).__name__} on the spatial/action/text attention layers; the"
                " temporal layers keep their `YanSimTemporalAttnProcessor2_0`."
            )
            processor = {n: (p if n in temporal_names else processor) for n, p in current.items()}
        super().set_attn_processor(processor)

    def set_default_attn_processor(self):
        """Plain `AttnProcessor` on spatial/action/text layers, a fresh temporal processor on temporal layers."""
        temporal_names = self._temporal_processor_names()
        self.set_attn_processor(
            {
                n: (YanSimTemporalAttnProcessor2_0() if n in temporal_names else AttnProcessor())
                for n in self.attn_processors
            }
        )

    # ------------------------------------------------------------------------------------------ input checking

    def _check_inputs(self, sample, actions, encoder_hidden_states, kv_cache, cache_frames):
        if not isinstance(sample, torch.Tensor) or sample.ndim != 5:
            shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise ValueError(f"`sample` must be a tensor [batch, channels, frames, height, width], got {shape}.")
        batch_size, channels, num_frames, height, width = sample.shape
        if channels != self.config.in_channels:
            raise ValueError(
                f"`sample` must have {self.config.in_channels} channels (dim 1), got shape {tuple(sample.shape)}."
            )
        factor = 2 ** (len(self.config.block_out_channels) - 1)
        if height % factor != 0 or width % factor != 0:
            raise ValueError(
                f"`sample` height and width must be divisible by {factor} (one halving per level), got"
                f" {height}x{width}."
            )
        if actions is not None:
            if not isinstance(actions, torch.Tensor):
                raise TypeError(
                    f"`actions` must be a float tensor [batch, frames, {self.action_dim}] (see"
                    f" `unet.action_space.encode_sequence`), got {type(actions).__name__}."
                )
            if tuple(actions.shape) != (batch_size, num_frames, self.action_dim):
                raise ValueError(
                    f"`actions` must have shape [batch, frames, action_dim] = {(batch_size, num_frames, self.action_dim)}"
                    f" for this sample and action space {list(self.action_space.names)}, got {tuple(actions.shape)}."
                )
        if encoder_hidden_states is not None:
            if not self.config.text_cross_attention:
                raise ValueError(
                    "`encoder_hidden_states` was given but this model has no text cross-attention"
                    " (`text_cross_attention=False`); pass None."
                )
            expected = f"[{batch_size}, L, {self.config.text_embed_dim}] or [{batch_size}, {num_frames}, L, {self.config.text_embed_dim}]"
            ehs = encoder_hidden_states
            if (
                not isinstance(ehs, torch.Tensor)
                or ehs.ndim not in (3, 4)
                or ehs.shape[0] != batch_size
                or ehs.shape[-1] != self.config.text_embed_dim
                or (ehs.ndim == 4 and ehs.shape[1] != num_frames)
            ):
                got = tuple(ehs.shape) if isinstance(ehs, torch.Tensor) else type(ehs).__name__
                raise ValueError(f"`encoder_hidden_states` must have shape {expected}, got {got}.")
        elif self.config.text_cross_attention:
            raise ValueError(
                "This model has text cross-attention (`text_cross_attention=True`): pass `encoder_hidden_states`"
                f" [batch, L, {self.config.text_embed_dim}] (e.g. the embedding of an empty prompt for no text)."
            )
        if kv_cache is not None:
            if not isinstance(kv_cache, YanSimKVCache):
                raise TypeError(f"`kv_cache` must be a YanSimKVCache or None, got {type(kv_cache).__name__}.")
            if kv_cache.fingerprint != self.kv_cache_fingerprint:
                raise ValueError(
                    f"`kv_cache` was made by a model with another configuration: {kv_cache.fingerprint}; this model is"
                    f" {self.kv_cache_fingerprint}."
                )
            if kv_cache.batch_size != batch_size:
                raise ValueError(
                    f"`kv_cache` holds a batch of {kv_cache.batch_size}, but `sample` has batch size {batch_size}."
                )
            if tuple(kv_cache.latent_size) != (height, width):
                raise ValueError(
                    f"`kv_cache` was built for {kv_cache.latent_size[0]}x{kv_cache.latent_size[1]} latents, but"
                    f" `sample` is {height}x{width}."
                )
        if not isinstance(cache_frames, int) or isinstance(cache_frames, bool) or not 0 <= cache_frames <= num_frames:
            raise ValueError(
                f"`cache_frames` must be an int between 0 and the number of frames ({num_frames}), got {cache_frames!r}."
            )

    def _per_frame_timesteps(self, timestep, batch_size: int, num_frames: int, device) -> torch.Tensor:
        """`timestep` (scalar, `[B]` or `[B, F]`, batch 1 broadcasts) -> flat `[B * F]` tensor."""
        if not isinstance(timestep, torch.Tensor):
            if not isinstance(timestep, (int, float, list, tuple)):
                raise TypeError(f"`timestep` must be a number, a list or a tensor, got {type(timestep).__name__}.")
            timestep = torch.tensor(timestep, device=device)
        timestep = timestep.to(device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch_size, num_frames)
        elif timestep.ndim == 1 and timestep.shape[0] in (1, batch_size):
            timestep = timestep[:, None].expand(batch_size, num_frames)
        elif timestep.ndim == 2 and timestep.shape[0] in (1, batch_size) and timestep.shape[1] == num_frames:
            timestep = timestep.expand(batch_size, num_frames)
        else:
            raise ValueError(
                f"`timestep` must be a scalar, [batch] = [{batch_size}] or [batch, frames] = [{batch_size}, {num_frames}]"
                f" (per-frame noise levels), got shape {tuple(timestep.shape)}."
            )
        return timestep.reshape(batch_size * num_frames)

    # ------------------------------------------------------------------------------------------------ forward

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        actions: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        kv_cache: YanSimKVCache | None = None,
        cache_frames: int = 0,
        return_dict: bool = True,
    ) -> YanSimUNetOutput | tuple:
        r"""
        Args:
            sample (`torch.Tensor`): Noisy latent video `[batch, in_channels, frames, height, width]`.
            timestep (`torch.Tensor`, `float` or `int`):
                Noise level: a scalar, one per sample `[batch]`, or one per frame `[batch, frames]` (Diffusion
                Forcing). Clean context frames use 0.
            actions (`torch.Tensor`, *optional*):
                Encoded actions `[batch, frames, action_dim]` (`unet.action_space.encode_sequence`); `None` means no
                button pressed on any frame.
            encoder_hidden_states (`torch.Tensor`, *optional*):
                Text states `[batch, L, text_embed_dim]` (shared by all frames) or `[batch, frames, L, text_embed_dim]`;
                required when `text_cross_attention=True`, refused otherwise.
            kv_cache (`YanSimKVCache`, *optional*):
                Keys/values of past clean frames. Temporal attention attends to the cached frames, then causally to
                the frames of this call. Never modified.
            cache_frames (`int`, defaults to 0):
                Return a cache extended with the first `cache_frames` frames of this call (the caller guarantees they
                are clean, t=0), keeping the newest `temporal_cache_size` frames.
            return_dict (`bool`, defaults to `True`): Return a `YanSimUNetOutput` instead of a tuple.

        Returns:
            `YanSimUNetOutput` or `(sample, kv_cache)`.
        """
        # 0. check inputs
        self._check_inputs(sample, actions, encoder_hidden_states, kv_cache, cache_frames)
        batch_size, _, num_frames, height, width = sample.shape
        batch_frames = batch_size * num_frames
        device, dtype = sample.device, sample.dtype

        # 1. per-frame timestep embedding [B * F, time_embed_dim]
        timesteps = self._per_frame_timesteps(timestep, batch_size, num_frames, device)
        temb = self.time_embedding(self.time_proj(timesteps).to(dtype=dtype))

        # 2. condition embedding: action tokens (and text states) per frame
        if actions is None:
            actions = torch.zeros(batch_size, num_frames, self.action_dim, device=device, dtype=dtype)
        action_tokens = self.action_encoder(actions.to(device)).reshape(
            batch_frames, self.config.num_action_tokens, -1
        )
        text_states = None
        if encoder_hidden_states is not None:
            if encoder_hidden_states.ndim == 3:
                encoder_hidden_states = encoder_hidden_states[:, None].expand(-1, num_frames, -1, -1)
            text_states = encoder_hidden_states.reshape(batch_frames, *encoder_hidden_states.shape[2:]).to(dtype)

        # 3. temporal context: rotary positions and causal mask over [cached frames] + [frames of this call]
        num_past = kv_cache.num_frames if kv_cache is not None else 0
        rotary_emb = get_frame_rotary_embedding(
            num_past + num_frames, self.config.attention_head_dim, self.config.temporal_rope_theta, device
        )
        cond = _FrameConditioning(
            num_frames=num_frames,
            action_tokens=action_tokens,
            text_states=text_states,
            rotary_emb=rotary_emb,
            temporal_mask=get_causal_frame_mask(num_past, num_frames, device),
        )
        past_key_values = (
            list(zip(kv_cache.keys, kv_cache.values))
            if kv_cache is not None and num_past > 0
            else [None] * self.num_temporal_layers
        )

        # 4. pre-process: fold frames into the batch [B, C, F, H, W] -> [B * F, C, H, W]
        hidden_states = sample.permute(0, 2, 1, 3, 4).reshape(batch_frames, -1, height, width)
        hidden_states = self.conv_in(hidden_states)

        # 5. down
        key_values = []
        down_block_res_samples = (hidden_states,)
        for down_block in self.down_blocks:
            hidden_states, res_samples, block_key_values = down_block(
                hidden_states, temb, cond, past_key_values[len(key_values) :]
            )
            key_values.extend(block_key_values)
            down_block_res_samples += res_samples

        # 6. mid
        hidden_states, block_key_values = self.mid_block(hidden_states, temb, cond, past_key_values[len(key_values) :])
        key_values.extend(block_key_values)

        # 7. up
        for up_block in self.up_blocks:
            num_skips = len(up_block.resnets)
            res_samples = down_block_res_samples[-num_skips:]
            down_block_res_samples = down_block_res_samples[:-num_skips]
            hidden_states, block_key_values = up_block(
                hidden_states, res_samples, temb, cond, past_key_values[len(key_values) :]
            )
            key_values.extend(block_key_values)

        # 8. post-process and unfold frames [B * F, C, H, W] -> [B, C, F, H, W]
        hidden_states = self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
        hidden_states = hidden_states.reshape(batch_size, num_frames, -1, height, width).permute(0, 2, 1, 3, 4)

        # 9. KV cache: append the first `cache_frames` clean frames, keep the newest `temporal_cache_size`
        new_cache = kv_cache
        if cache_frames > 0:
            new_cache = self._extend_kv_cache(kv_cache, key_values, cache_frames, batch_size, (height, width))

        if not return_dict:
            return (hidden_states, new_cache)
        return YanSimUNetOutput(sample=hidden_states, kv_cache=new_cache)

    def _extend_kv_cache(
        self,
        kv_cache: YanSimKVCache | None,
        key_values: list,
        cache_frames: int,
        batch_size: int,
        latent_size: tuple[int, int],
    ) -> YanSimKVCache:
        size = self.config.temporal_cache_size
        num_new = min(cache_frames, size)
        num_keep = min(kv_cache.num_frames if kv_cache is not None else 0, size - num_new)
        keys, values = [], []
        for i, (key, value) in enumerate(key_values):
            # the newest frames among the first `cache_frames` of this call
            key = key[:, :, cache_frames - num_new : cache_frames]
            value = value[:, :, cache_frames - num_new : cache_frames]
            if num_keep > 0:
                key = torch.cat([kv_cache.keys[i][:, :, -num_keep:], key], dim=2)
                value = torch.cat([kv_cache.values[i][:, :, -num_keep:], value], dim=2)
            else:
                # a slice would keep this call's full key/value tensors alive; copy the few cached frames instead
                key, value = key.contiguous(), value.contiguous()
            keys.append(key)
            values.append(value)
        return YanSimKVCache(
            keys=tuple(keys),
            values=tuple(values),
            num_frames=num_keep + num_new,
            batch_size=batch_size,
            latent_size=latent_size,
            fingerprint=self.kv_cache_fingerprint,
        )
