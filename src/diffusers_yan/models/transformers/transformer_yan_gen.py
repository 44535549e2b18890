"""Yan-Gen's denoiser: the Wan2.1 DiT with decoupled text/image/action cross-attention and a causal streaming mode.

Seed slides "Wan -> Yan-Gen" and "Yan-Gen: Architecture": Yan-Gen starts from Wan2.1 (umT5 text tokens, CLIP
ViT-H-14 image tokens), adds an action branch next to the text and image cross-attention ("decoupled cross
attention for text, image and action inputs"), and is post-trained into a causal, autoregressive, few-step
generator (block-causal attention, per-frame noise levels, KV cache).

The parameter names are those of diffusers' [`~diffusers.WanTransformer3DModel`], so a diffusers-format Wan2.1
transformer folder (T2V or I2V) loads directly with `YanGenTransformer3DModel.from_pretrained(folder)`. Weights
that Wan does not have (the action encoder and the action cross-attention) are created so that the output is
unchanged until they are trained: every action branch ends in a zero-initialised output projection.

Reading order: KV cache, helpers, attention processors, attention modules, transformer block, then the model.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin, FeedForward
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import (
    WanAttention,
    WanRotaryPosEmbed,
    WanTimeTextImageEmbedding,
    _get_added_kv_projections,
    _get_qkv_projections,
)
from diffusers.utils import BaseOutput, logging

from ...actions import ActionSpace
from ..embeddings import YanActionEncoder


logger = logging.get_logger(__name__)  # pylint: disable=invalid-name

# The action space a Yan-Gen transformer gets when its config does not name one (e.g. when a plain Wan2.1 folder
# is loaded): the 8 Doom buttons shared with Yan-Sim. Pass `action_space=None` for a model without action branch.
DEFAULT_ACTION_SPACE = ActionSpace().to_dict()


# ----------------------------------------------------------------------------------------------------------------
# KV cache
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class YanGenKVCache:
    """Keys and values of the self-attention of already generated (clean) latent frames, one entry per layer.

    The cache is **immutable**: :meth:`append` returns a new cache and never changes this one, so a world can be
    branched by handing the same cache to several continuations. It holds at most ``max_frames`` latent frames
    (whole blocks; the oldest are dropped first), which keeps memory and per-block time flat however long a world
    runs.

    Keys are stored *before* rotary embedding. RoPE only depends on position differences, so the model re-rotates
    the cached keys with positions counted from the oldest cached frame; positions therefore never outgrow the
    rotary table, and the result equals absolute positions up to float rounding.

    Attributes:
        keys: per layer, ``[batch, num_cached_tokens, heads, head_dim]``.
        values: per layer, same shape as ``keys``.
        frame_indices: absolute latent-frame index of each cached frame, ``[num_cached_frames]`` (long).
        tokens_per_frame: tokens of one latent frame (post-patch height x width).
        num_frames_seen: latent frames ever appended; the absolute index of the next frame to generate.
        max_frames: the window, in latent frames.
        num_frames_per_block: frames of one causal block (eviction drops whole blocks).
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    frame_indices: torch.Tensor
    tokens_per_frame: int
    num_frames_seen: int
    max_frames: int
    num_frames_per_block: int

    @property
    def num_frames(self) -> int:
        """Latent frames currently held."""
        return int(self.frame_indices.numel())

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def nbytes(self) -> int:
        """Memory held by the keys and values, in bytes."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def append(
        self, keys: list[torch.Tensor], values: list[torch.Tensor], num_new_frames: int, tokens_per_frame: int
    ) -> "YanGenKVCache":
        """A new cache with ``num_new_frames`` frames appended (and the oldest blocks dropped past the window)."""
        return YanGenKVCache._build(self, keys, values, num_new_frames, tokens_per_frame)

    def to(self, device=None, dtype=None) -> "YanGenKVCache":
        return YanGenKVCache(
            keys=tuple(k.to(device=device, dtype=dtype) for k in self.keys),
            values=tuple(v.to(device=device, dtype=dtype) for v in self.values),
            frame_indices=self.frame_indices.to(device=device),
            tokens_per_frame=self.tokens_per_frame,
            num_frames_seen=self.num_frames_seen,
            max_frames=self.max_frames,
            num_frames_per_block=self.num_frames_per_block,
        )

    @staticmethod
    def _build(
        past: "YanGenKVCache | None",
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        num_new_frames: int,
        tokens_per_frame: int,
        max_frames: int | None = None,
        num_frames_per_block: int | None = None,
    ) -> "YanGenKVCache":
        start = 0 if past is None else past.num_frames_seen
        new_indices = torch.arange(start, start + num_new_frames, device=keys[0].device)
        if past is not None:
            if past.tokens_per_frame != tokens_per_frame:
                raise ValueError(
                    f"`kv_cache` holds frames of {past.tokens_per_frame} tokens but the input has {tokens_per_frame}"
                    " tokens per frame; a world keeps its resolution."
                )
            keys = [torch.cat([pk, k], dim=1) for pk, k in zip(past.keys, keys)]
            values = [torch.cat([pv, v], dim=1) for pv, v in zip(past.values, values)]
            new_indices = torch.cat([past.frame_indices.to(new_indices.device), new_indices])
            max_frames, num_frames_per_block = past.max_frames, past.num_frames_per_block
        # drop the oldest whole blocks beyond the window
        num_frames = new_indices.numel()
        keep_frames = min(num_frames, max_frames // num_frames_per_block * num_frames_per_block)
        if keep_frames < num_frames:
            drop_tokens = (num_frames - keep_frames) * tokens_per_frame
            keys = [k[:, drop_tokens:] for k in keys]
            values = [v[:, drop_tokens:] for v in values]
            new_indices = new_indices[num_frames - keep_frames :]
        return YanGenKVCache(
            keys=tuple(k.contiguous() for k in keys),
            values=tuple(v.contiguous() for v in values),
            frame_indices=new_indices,
            tokens_per_frame=tokens_per_frame,
            num_frames_seen=start + num_new_frames,
            max_frames=max_frames,
            num_frames_per_block=num_frames_per_block,
        )


@dataclass
class YanGenTransformer3DModelOutput(BaseOutput):
    """
    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, num_frames, height, width)`):
            The model prediction (flow velocity for Wan-style training).
        kv_cache (`YanGenKVCache`, *optional*):
            A new cache including this input's frames, when `return_kv_cache=True`.
    """

    sample: torch.Tensor
    kv_cache: YanGenKVCache | None = None


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


# Adapted from diffusers.models.transformers.transformer_wan.WanAttnProcessor (inner `apply_rotary_emb`)
def apply_rotary_emb(hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


def block_causal_mask(
    query_frames: torch.Tensor, key_frames: torch.Tensor, num_frames_per_block: int, max_past_frames: int
) -> torch.Tensor:
    """Frame-level mask ``[num_query_frames, num_key_frames]``: True where a query frame may attend to a key frame.

    A frame sees every frame of its own block and of the ``max_past_frames // num_frames_per_block`` blocks before
    it; the same rule as the KV cache's window, so a one-shot forward and block-by-block streaming agree.
    """
    query_blocks = (query_frames // num_frames_per_block)[:, None]
    key_blocks = (key_frames // num_frames_per_block)[None, :]
    max_past_blocks = max_past_frames // num_frames_per_block
    return (key_blocks <= query_blocks) & (key_blocks >= query_blocks - max_past_blocks)


# Adapted from diffusers.models.transformers.transformer_wan.WanRotaryPosEmbed
class YanGenRotaryPosEmbed(WanRotaryPosEmbed):
    """Wan's 3-D RoPE, with the temporal positions given explicitly (needed to continue from a KV cache)."""

    def forward(
        self, hidden_states: torch.Tensor, frame_positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if frame_positions is None:
            return super().forward(hidden_states)
        _, _, _, height, width = hidden_states.shape
        _, p_h, p_w = self.patch_size
        pph, ppw = height // p_h, width // p_w
        if int(frame_positions.max()) >= self.max_seq_len:
            raise ValueError(
                f"Frame position {int(frame_positions.max())} exceeds `rope_max_seq_len={self.max_seq_len}`; use a"
                " KV cache (streaming) for long videos or raise `rope_max_seq_len`."
            )
        ppf = frame_positions.numel()
        split_sizes = [self.t_dim, self.h_dim, self.w_dim]
        freqs = []
        for table in (self.freqs_cos, self.freqs_sin):
            t_table, h_table, w_table = table.split(split_sizes, dim=1)
            f = t_table[frame_positions.to(t_table.device)].view(ppf, 1, 1, -1).expand(ppf, pph, ppw, -1)
            h = h_table[:pph].view(1, pph, 1, -1).expand(ppf, pph, ppw, -1)
            w = w_table[:ppw].view(1, 1, ppw, -1).expand(ppf, pph, ppw, -1)
            freqs.append(torch.cat([f, h, w], dim=-1).reshape(1, ppf * pph * ppw, 1, -1))
        return freqs[0], freqs[1]


# ----------------------------------------------------------------------------------------------------------------
# Attention processors
# ----------------------------------------------------------------------------------------------------------------


class YanGenSelfAttnProcessor:
    """Self-attention over this input's tokens and, optionally, the cached tokens of past frames.

    Adapted from diffusers.models.transformers.transformer_wan.WanAttnProcessor (self-attention path), with an
    attention mask (block-causal) and a KV cache. Returns the output and this input's un-rotated keys and values
    so the caller can build the next cache.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        rotary_emb_key: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        new_key_value = (key, value)

        if past_key_value is not None:
            key = torch.cat([past_key_value[0].to(key.dtype), key], dim=1)
            value = torch.cat([past_key_value[1].to(value.dtype), value], dim=1)
        if rotary_emb is not None:
            query = apply_rotary_emb(query, *rotary_emb)
            key = apply_rotary_emb(key, *(rotary_emb_key if rotary_emb_key is not None else rotary_emb))

        hidden_states = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
        )
        hidden_states = hidden_states.flatten(2, 3).type_as(query)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states, new_key_value


class YanGenCrossAttnProcessor:
    """Decoupled cross-attention: one query, separate keys/values for text, image and action tokens.

    Adapted from diffusers.models.transformers.transformer_wan.WanAttnProcessor (cross-attention path). Text and
    image are passed separately instead of concatenated (so nothing assumes 512 text tokens). The action branch is
    frame-local: the queries of latent frame ``f`` attend only to the action tokens of frame ``f``, which keeps the
    model causal in its actions; it has its own zero-initialised output projection.
    """

    _attention_backend = None
    _parallel_config = None

    def _attend(self, query, key, value):
        out = dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, backend=self._attention_backend)
        return out.flatten(2, 3).type_as(query)

    def __call__(
        self,
        attn: "YanGenCrossAttention",
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        action_hidden_states: torch.Tensor | None = None,
        tokens_per_frame: int | None = None,
    ) -> torch.Tensor:
        # 1. shared query
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))

        # 2. text branch
        output = torch.zeros_like(query.flatten(2, 3))
        if encoder_hidden_states is not None:
            if attn.fused_projections:
                key, value = attn.to_kv(encoder_hidden_states).chunk(2, dim=-1)
            else:
                key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
            key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
            value = value.unflatten(2, (attn.heads, -1))
            output = self._attend(query, key, value)

        # 3. image branch (Wan2.1 I2V's CLIP tokens); added before the output projection, as in Wan
        if encoder_hidden_states_image is not None and attn.add_k_proj is not None:
            key_img, value_img = _get_added_kv_projections(attn, encoder_hidden_states_image)
            key_img = attn.norm_added_k(key_img).unflatten(2, (attn.heads, -1))
            value_img = value_img.unflatten(2, (attn.heads, -1))
            output = output + self._attend(query, key_img, value_img)

        output = attn.to_out[0](output)
        output = attn.to_out[1](output)

        # 4. action branch: frame-local, with its own (zero-initialised) output projection
        if action_hidden_states is not None and attn.add_k_proj_action is not None:
            batch_size, num_frames, num_tokens, _ = action_hidden_states.shape
            key_act = attn.norm_added_k_action(attn.add_k_proj_action(action_hidden_states))
            value_act = attn.add_v_proj_action(action_hidden_states)
            key_act = key_act.flatten(0, 1).unflatten(2, (attn.heads, -1))  # [B*F, T, heads, head_dim]
            value_act = value_act.flatten(0, 1).unflatten(2, (attn.heads, -1))
            query_act = query.unflatten(1, (num_frames, tokens_per_frame)).flatten(0, 1)  # [B*F, HW, heads, d]
            action_output = self._attend(query_act, key_act, value_act).unflatten(0, (batch_size, num_frames))
            output = output + attn.to_out_action(action_output.flatten(1, 2))
        return output


# ----------------------------------------------------------------------------------------------------------------
# Attention modules and transformer block
# ----------------------------------------------------------------------------------------------------------------


class YanGenCrossAttention(WanAttention):
    """Wan's cross-attention module (same parameter names) plus an optional action key/value branch.

    Args:
        action_embed_dim: width of the action tokens; `None` means no action branch.
        (the rest as in `WanAttention`)
    """

    _default_processor_cls = YanGenCrossAttnProcessor
    _available_processors = [YanGenCrossAttnProcessor]

    def __init__(self, dim: int, heads: int, dim_head: int, eps: float, added_kv_proj_dim=None, action_embed_dim=None):
        super().__init__(
            dim=dim,
            heads=heads,
            dim_head=dim_head,
            eps=eps,
            added_kv_proj_dim=added_kv_proj_dim,
            cross_attention_dim_head=dim_head,
            processor=YanGenCrossAttnProcessor(),
        )
        self.add_k_proj_action = self.add_v_proj_action = self.to_out_action = None
        if action_embed_dim is not None:
            self.add_k_proj_action = nn.Linear(action_embed_dim, self.inner_dim, bias=True)
            self.add_v_proj_action = nn.Linear(action_embed_dim, self.inner_dim, bias=True)
            self.norm_added_k_action = nn.RMSNorm(self.inner_dim, eps=eps)
            self.to_out_action = nn.Linear(self.inner_dim, dim, bias=True)


class YanGenTransformerBlock(nn.Module):
    """Wan's transformer block (same parameter names) with cached/masked self-attention and decoupled
    cross-attention.

    Adapted from diffusers.models.transformers.transformer_wan.WanTransformerBlock.
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        cross_attn_norm: bool = False,
        eps: float = 1e-6,
        added_kv_proj_dim: int | None = None,
        action_embed_dim: int | None = None,
    ):
        super().__init__()

        # 1. Self-attention
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.attn1 = WanAttention(
            dim=dim,
            heads=num_heads,
            dim_head=dim // num_heads,
            eps=eps,
            cross_attention_dim_head=None,
            processor=YanGenSelfAttnProcessor(),
        )

        # 2. Cross-attention (text, image and action branches)
        self.attn2 = YanGenCrossAttention(
            dim=dim,
            heads=num_heads,
            dim_head=dim // num_heads,
            eps=eps,
            added_kv_proj_dim=added_kv_proj_dim,
            action_embed_dim=action_embed_dim,
        )
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()

        # 3. Feed-forward
        self.ffn = FeedForward(dim, inner_dim=ffn_dim, activation_fn="gelu-approximate")
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=False)

        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
        encoder_hidden_states_image: torch.Tensor | None = None,
        action_hidden_states: torch.Tensor | None = None,
        tokens_per_frame: int | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        rotary_emb_key: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if temb.ndim == 4:
            # per-token modulation: temb is [batch, seq_len, 6, dim] (per-frame timesteps)
            modulation = (self.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)
            modulation = [m.squeeze(2) for m in modulation]
        else:
            # one timestep per sample: temb is [batch, 6, dim]
            modulation = (self.scale_shift_table + temb.float()).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = modulation

        # 1. Self-attention
        norm_hidden_states = (self.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa).type_as(hidden_states)
        attn_output, new_key_value = self.attn1.processor(
            self.attn1,
            norm_hidden_states,
            attention_mask=attention_mask,
            rotary_emb=rotary_emb,
            past_key_value=past_key_value,
            rotary_emb_key=rotary_emb_key,
        )
        hidden_states = (hidden_states.float() + attn_output * gate_msa).type_as(hidden_states)

        # 2. Cross-attention
        norm_hidden_states = self.norm2(hidden_states.float()).type_as(hidden_states)
        attn_output = self.attn2.processor(
            self.attn2,
            norm_hidden_states,
            encoder_hidden_states,
            encoder_hidden_states_image=encoder_hidden_states_image,
            action_hidden_states=action_hidden_states,
            tokens_per_frame=tokens_per_frame,
        )
        hidden_states = hidden_states + attn_output

        # 3. Feed-forward
        norm_hidden_states = (self.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa).type_as(
            hidden_states
        )
        ff_output = self.ffn(norm_hidden_states)
        hidden_states = (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)

        return hidden_states, new_key_value


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


class YanGenTransformer3DModel(ModelMixin, ConfigMixin, PeftAdapterMixin, AttentionMixin):
    r"""
    Yan-Gen's diffusion transformer: Wan2.1 with decoupled text/image/action cross-attention and causal streaming.

    With `action_space=None` and `num_frames_per_block=None` it computes exactly what diffusers'
    `WanTransformer3DModel` computes with the same weights (tested).

    Args:
        patch_size, num_attention_heads, attention_head_dim, in_channels, out_channels, text_dim, freq_dim,
        ffn_dim, num_layers, cross_attn_norm, qk_norm, eps, image_dim, added_kv_proj_dim, rope_max_seq_len,
        pos_embed_seq_len:
            As in [`~diffusers.WanTransformer3DModel`] (same defaults: Wan2.1-14B T2V). An I2V checkpoint has
            `in_channels=36` (noise + mask + image latents) and `image_dim=1280` (CLIP ViT-H-14 tokens).
        action_space (`dict`, *optional*):
            The [`ActionSpace`] (as `ActionSpace.to_dict()`) of the action branch; `None` for no action branch.
            Defaults to the 8 Doom buttons, so loading a plain Wan folder adds a (zero-initialised) action branch.
        action_embed_dim (`int`, defaults to 768):
            Width of the action tokens made by the shared [`YanActionEncoder`] (768 in the paper).
        action_num_tokens (`int`, defaults to 1):
            Tokens per action (the paper uses one).
        num_frames_per_block (`int`, *optional*):
            Causal mode: latent frames per block of block-causal self-attention (Self-Forcing uses 3). `None` is
            Wan's bidirectional attention.
        kv_cache_max_frames (`int`, defaults to 21):
            Causal mode: past latent frames a block attends to (the KV cache window). 21 latent frames is Wan2.1's
            training length (81 video frames), so a block never sees more context than the base model was
            trained on. Rounded down to whole blocks.

    Example:

    ```py
    >>> import torch
    >>> from diffusers_yan import YanGenTransformer3DModel
    >>> model = YanGenTransformer3DModel(
    ...     num_attention_heads=2, attention_head_dim=12, text_dim=16, ffn_dim=32, num_layers=2,
    ...     action_space={"buttons": ["LEFT", "RIGHT"]}, action_embed_dim=16, num_frames_per_block=1,
    ...     kv_cache_max_frames=2,
    ... )
    >>> latents = torch.randn(1, 16, 1, 8, 8)  # one block of one latent frame
    >>> text = torch.randn(1, 5, 16)
    >>> out = model(latents, torch.tensor([999]), text, actions=torch.tensor([[[1.0, 0.0]]]), return_kv_cache=True)
    >>> out.sample.shape, out.kv_cache.num_frames
    (torch.Size([1, 16, 1, 8, 8]), 1)
    ```
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["patch_embedding", "condition_embedder", "action_encoder", "norm"]
    _no_split_modules = ["YanGenTransformerBlock"]
    _keep_in_fp32_modules = ["rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3"]
    _keys_to_ignore_on_load_unexpected = ["norm_added_q"]
    _repeated_blocks = ["YanGenTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        action_space: dict | None = DEFAULT_ACTION_SPACE,
        action_embed_dim: int = 768,
        action_num_tokens: int = 1,
        num_frames_per_block: int | None = None,
        kv_cache_max_frames: int = 21,
    ) -> None:
        super().__init__()

        inner_dim = num_attention_heads * attention_head_dim
        out_channels = out_channels or in_channels
        if num_frames_per_block is not None and not (1 <= num_frames_per_block <= kv_cache_max_frames):
            raise ValueError(
                f"`num_frames_per_block` must be between 1 and `kv_cache_max_frames={kv_cache_max_frames}`, got"
                f" {num_frames_per_block}."
            )
        if action_space is not None:
            # validate and store the normalised form, so the saved config always spells out the buttons
            action_space = ActionSpace.from_dict(action_space).to_dict()
            self.register_to_config(action_space=action_space)

        # 1. Patch & position embedding
        self.rope = YanGenRotaryPosEmbed(attention_head_dim, patch_size, rope_max_seq_len)
        self.patch_embedding = nn.Conv3d(in_channels, inner_dim, kernel_size=patch_size, stride=patch_size)

        # 2. Condition embeddings (timestep, text, image); image_dim=1280 for the I2V model
        self.condition_embedder = WanTimeTextImageEmbedding(
            dim=inner_dim,
            time_freq_dim=freq_dim,
            time_proj_dim=inner_dim * 6,
            text_embed_dim=text_dim,
            image_embed_dim=image_dim,
            pos_embed_seq_len=pos_embed_seq_len,
        )

        # 3. Action embedding (the encoder shared with Yan-Sim)
        self.action_encoder = None
        if action_space is not None:
            self.action_encoder = YanActionEncoder(
                action_dim=ActionSpace.from_dict(action_space).dim,
                embed_dim=action_embed_dim,
                num_tokens=action_num_tokens,
            )

        # 4. Transformer blocks
        self.blocks = nn.ModuleList(
            [
                YanGenTransformerBlock(
                    inner_dim,
                    ffn_dim,
                    num_attention_heads,
                    cross_attn_norm,
                    eps,
                    added_kv_proj_dim,
                    action_embed_dim if action_space is not None else None,
                )
                for _ in range(num_layers)
            ]
        )

        # 5. Output norm & projection
        self.norm_out = FP32LayerNorm(inner_dim, eps, elementwise_affine=False)
        self.proj_out = nn.Linear(inner_dim, out_channels * math.prod(patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, inner_dim) / inner_dim**0.5)

        # the new (non-Wan) weights start as a no-op: the action branches' output projections are zero
        self.zero_init_action_branch()

        self.gradient_checkpointing = False

    @property
    def action_space(self) -> ActionSpace | None:
        """The model's [`ActionSpace`], or `None` when it has no action branch."""
        return None if self.config.action_space is None else ActionSpace.from_dict(self.config.action_space)

    @property
    def is_causal(self) -> bool:
        return self.config.num_frames_per_block is not None

    def new_weight_names(self) -> list[str]:
        """Names of the parameters that a diffusers Wan2.1 transformer does not have."""
        return [n for n, _ in self.named_parameters() if n.startswith("action_encoder.") or "_action" in n]

    @torch.no_grad()
    def zero_init_action_branch(self) -> None:
        """Zero the action branches' output projections, so the action branch adds nothing until trained."""
        for block in self.blocks:
            if block.attn2.to_out_action is not None:
                nn.init.zeros_(block.attn2.to_out_action.weight)
                nn.init.zeros_(block.attn2.to_out_action.bias)

    @torch.no_grad()
    def reset_action_branch(self) -> None:
        """Re-initialise every action weight (PyTorch defaults), then zero the output projections.

        Used for weights a checkpoint does not have: the loader leaves them uninitialised (on the meta device).
        """
        modules = [self.action_encoder] if self.action_encoder is not None else []
        for block in self.blocks:
            attn = block.attn2
            if attn.to_out_action is not None:
                modules += [
                    attn.add_k_proj_action,
                    attn.add_v_proj_action,
                    attn.norm_added_k_action,
                    attn.to_out_action,
                ]
        device = self.proj_out.weight.device
        for module in modules:
            if any(p.is_meta for p in module.parameters()):  # `from_pretrained` leaves missing weights on "meta"
                module.to_empty(device=device)
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
        if self.action_encoder is not None:
            nn.init.zeros_(self.action_encoder.token_embedding)
        self.zero_init_action_branch()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        r"""Load a Yan-Gen transformer, or a diffusers-format Wan2.1 transformer (T2V or I2V).

        Weights missing from the checkpoint (the action branch, when loading Wan) are initialised so that the
        model's output equals Wan's, and logged by name. Other arguments as in `ModelMixin.from_pretrained`.

        ```py
        >>> model = YanGenTransformer3DModel.from_pretrained(  # doctest: +SKIP
        ...     "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", subfolder="transformer", num_frames_per_block=3
        ... )
        ```
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        missing = sorted(info["missing_keys"])
        new_weights = set(model.new_weight_names())
        if missing:
            not_new = [k for k in missing if k not in new_weights]
            if not_new:
                raise ValueError(
                    f"{pretrained_model_name_or_path} lacks weights that are not part of the action branch:"
                    f" {not_new[:8]}{'...' if len(not_new) > 8 else ''}. Is it a Wan2.1 / Yan-Gen transformer?"
                )
            model.reset_action_branch()
            logger.warning(
                f"Initialised {len(missing)} new Yan-Gen weights (the action branch; output projections at zero, so"
                f" outputs match the checkpoint until trained): {missing}"
            )
        return (model, info) if output_loading_info else model

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        actions: torch.Tensor | None = None,
        kv_cache: YanGenKVCache | None = None,
        return_kv_cache: bool = False,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> YanGenTransformer3DModelOutput | tuple:
        r"""
        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, in_channels, num_frames, height, width)`):
                Noisy latents (plus, for I2V models, the mask and image-latent channels). In causal mode with a
                `kv_cache`, these are the frames that come right after the cached ones.
            timestep (`torch.Tensor` of shape `(batch_size,)` or `(batch_size, num_frames)`):
                One timestep per sample, or one per latent frame (diffusion forcing / per-block noise levels).
            encoder_hidden_states (`torch.Tensor` of shape `(batch_size, text_len, text_dim)`, *optional*):
                Text encoder states (umT5 in Wan); `None` skips the text branch.
            encoder_hidden_states_image (`torch.Tensor` of shape `(batch_size, 257, image_dim)`, *optional*):
                CLIP image states (penultimate layer) for I2V models; `None` skips the image branch.
            actions (`torch.Tensor` of shape `(batch_size, num_frames, action_dim)`, *optional*):
                One encoded action per latent frame (or `(batch_size, num_frames, k, action_dim)` for `k` actions
                per latent frame), from `model.action_space.encode_sequence`. `None` skips the action branch.
            kv_cache (`YanGenKVCache`, *optional*):
                Causal mode only: keys/values of the past frames. Never modified.
            return_kv_cache (`bool`, defaults to `False`):
                Causal mode only: also return a new cache with this input's frames appended (call it on clean
                frames, with timestep 0, to extend the context).
            return_dict (`bool`, defaults to `True`):
                Return a [`YanGenTransformer3DModelOutput`] instead of a tuple `(sample,)` / `(sample, kv_cache)`.
            attention_kwargs (`dict`, *optional*): accepted for API compatibility with diffusers; unused.
        """
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        ppf, pph, ppw = num_frames // p_t, height // p_h, width // p_w
        tokens_per_frame = pph * ppw
        block = self.config.num_frames_per_block
        if (kv_cache is not None or return_kv_cache) and block is None:
            raise ValueError(
                "`kv_cache`/`return_kv_cache` need a causal model; set `num_frames_per_block` in the config."
            )
        if block is not None and ppf % block != 0:
            raise ValueError(
                f"`hidden_states` has {ppf} latent frames; causal mode needs a multiple of `num_frames_per_block`"
                f" ({block})."
            )
        if kv_cache is not None and kv_cache.batch_size != batch_size:
            raise ValueError(f"`kv_cache` has batch size {kv_cache.batch_size}, `hidden_states` has {batch_size}.")

        # 1. Patch & position embedding. Frames are numbered from the start of the world; rotary positions are
        #    counted from the oldest frame this input attends to (RoPE is relative, see `YanGenKVCache`).
        first_frame = 0 if kv_cache is None else kv_cache.num_frames_seen
        query_frames = torch.arange(first_frame, first_frame + ppf, device=hidden_states.device)
        key_frames = query_frames if kv_cache is None else torch.cat([kv_cache.frame_indices, query_frames])
        if kv_cache is None:
            rotary_emb, rotary_emb_key = self.rope(hidden_states), None
        else:
            origin = key_frames[0]
            rotary_emb = self.rope(hidden_states, query_frames - origin)
            rotary_emb_key = self.rope(hidden_states, key_frames - origin)

        hidden_states = self.patch_embedding(hidden_states)
        hidden_states = hidden_states.flatten(2).transpose(1, 2).contiguous()

        # 2. Condition embeddings: timestep, text, image (Wan's `WanTimeTextImageEmbedding`, with per-frame timesteps)
        per_frame = timestep.ndim == 2
        if per_frame and timestep.shape[1] != ppf:
            raise ValueError(f"`timestep` has {timestep.shape[1]} per-frame values for {ppf} latent frames.")
        embedder = self.condition_embedder
        timestep_freqs = embedder.timesteps_proj(timestep.flatten())
        if per_frame:
            timestep_freqs = timestep_freqs.unflatten(0, (batch_size, ppf))
        time_embedder_dtype = next(iter(embedder.time_embedder.parameters())).dtype
        if timestep_freqs.dtype != time_embedder_dtype and time_embedder_dtype != torch.int8:
            timestep_freqs = timestep_freqs.to(time_embedder_dtype)
        temb = embedder.time_embedder(timestep_freqs).type_as(hidden_states)
        timestep_proj = embedder.time_proj(embedder.act_fn(temb))
        if per_frame:
            # one modulation per frame, repeated over the frame's tokens: [batch, seq_len, 6, dim]
            timestep_proj = timestep_proj.unflatten(2, (6, -1)).repeat_interleave(tokens_per_frame, dim=1)
            temb = temb.repeat_interleave(tokens_per_frame, dim=1)
        else:
            timestep_proj = timestep_proj.unflatten(1, (6, -1))
        if encoder_hidden_states is not None:
            encoder_hidden_states = embedder.text_embedder(encoder_hidden_states)
        if encoder_hidden_states_image is not None:
            if embedder.image_embedder is None:
                raise ValueError("`encoder_hidden_states_image` was given but this model has no image branch.")
            encoder_hidden_states_image = embedder.image_embedder(encoder_hidden_states_image)

        # 3. Action embedding: [batch, frames, tokens, action_embed_dim]
        action_hidden_states = None
        if actions is not None:
            if self.action_encoder is None:
                raise ValueError("`actions` were given but this model has no action branch (`action_space=None`).")
            if actions.ndim == 3:
                actions = actions.unsqueeze(2)
            if actions.ndim != 4 or actions.shape[:2] != (batch_size, ppf):
                raise ValueError(
                    f"`actions` must be [batch_size={batch_size}, num_frames={ppf}, action_dim] (or with a 3rd axis"
                    f" of actions per frame), got {tuple(actions.shape)}."
                )
            action_hidden_states = self.action_encoder(actions).flatten(2, 3).to(hidden_states.dtype)

        # 4. Transformer blocks. In causal mode each layer attends to its cached keys/values and the new frames,
        #    under a block-causal mask (None when every key is visible, e.g. one block after a cache)
        attention_mask = None
        if block is not None:
            frame_mask = block_causal_mask(query_frames, key_frames, block, self.config.kv_cache_max_frames)
            if not bool(frame_mask.all()):
                attention_mask = frame_mask.repeat_interleave(tokens_per_frame, 0)
                attention_mask = attention_mask.repeat_interleave(tokens_per_frame, 1)
        new_keys, new_values = [], []
        for i, layer in enumerate(self.blocks):
            past = None if kv_cache is None else (kv_cache.keys[i], kv_cache.values[i])
            layer_args = (
                hidden_states,
                encoder_hidden_states,
                timestep_proj,
                rotary_emb,
                encoder_hidden_states_image,
                action_hidden_states,
                tokens_per_frame,
                attention_mask,
                past,
                rotary_emb_key,
            )
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states, (key, value) = self._gradient_checkpointing_func(layer, *layer_args)
            else:
                hidden_states, (key, value) = layer(*layer_args)
            if return_kv_cache:
                new_keys.append(key)
                new_values.append(value)

        # 5. Output norm, projection & unpatchify
        if temb.ndim == 3:
            shift, scale = (self.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift = shift.to(hidden_states.device)
        scale = scale.to(hidden_states.device)
        hidden_states = (self.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_size, ppf, pph, ppw, p_t, p_h, p_w, -1)
        hidden_states = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6)
        output = hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)

        # 6. New KV cache (a new object; `kv_cache` is left as it was)
        new_cache = None
        if return_kv_cache:
            new_cache = YanGenKVCache._build(
                kv_cache,
                new_keys,
                new_values,
                ppf,
                tokens_per_frame,
                max_frames=self.config.kv_cache_max_frames,
                num_frames_per_block=block,
            )

        if not return_dict:
            return (output,) if not return_kv_cache else (output, new_cache)
        return YanGenTransformer3DModelOutput(sample=output, kv_cache=new_cache)
