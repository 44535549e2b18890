"""YanGenPipeline: multimodal (text + image + action) world generation on a Wan2.1-compatible DiT.

One `__call__` covers the seed's four result modes ("Yan-Gen: Results"):

- **text-to-video**: `pipe(prompt=...)`;
- **image-to-video** (I2V transformers, `in_channels=36`): `pipe(prompt=..., image=...)`;
- **interactive generation**: `pipe(..., actions=[...])`, then `pipe(state=out.state, actions=[...])` to go on;
- **text-guided expansion**: `pipe(state=out.state, prompt="a new prompt", ...)` continues the same world under a
  new prompt.

With a bidirectional transformer (`num_frames_per_block=None`, e.g. a converted Wan2.1 checkpoint) a call makes a
whole clip, as diffusers' `WanPipeline` does. With a causal transformer (after Yan-Gen's autoregressive
post-training) the clip is generated block by block: each block of latent frames is denoised while attending to
the KV cache of the clean past, then one extra pass at timestep 0 adds the block to the cache, and the VAE decodes
the new latent frames with its streaming cache. Both caches travel in the returned `state` (see `YanGenState`), so
the pipeline object holds no per-world data and one pipeline serves many worlds. The interactive contract is the
one of `YanSimPipeline`: a one-shot call with N actions equals N chained one-action calls for the same seed,
changing a future action never changes a past frame, and memory stays flat.
"""

import copy
import hashlib
import html
import json
import re
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKLWan, DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import CLIPImageProcessor, CLIPVisionModel, PreTrainedModel, PreTrainedTokenizerBase

from ...actions import ActionSpace
from ...models.transformers.transformer_yan_gen import YanGenTransformer3DModel
from ..pipeline_utils import shipped_start_frames
from .pipeline_output import YanGenPipelineOutput, YanGenState


logger = logging.get_logger(__name__)  # pylint: disable=invalid-name

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers.utils import export_to_video, load_image
        >>> from diffusers_yan import YanGenPipeline

        >>> # a folder made by `yan convert-wan --wan Wan2.1-I2V-14B-480P-Diffusers --out yan-gen-i2v`, then trained
        >>> pipe = YanGenPipeline.from_pretrained("yan-gen-i2v", dtype=torch.bfloat16)
        >>> pipe.enable_model_cpu_offload()
        >>> start = load_image("start.png")
        >>> g = torch.Generator().manual_seed(0)
        >>> out = pipe(prompt="a stone courtyard at dusk", image=start, actions=["MOVE_FORWARD"] * 4, generator=g)
        >>> out = pipe(state=out.state, actions=["TURN_LEFT"] * 2)  # continue the same world
        >>> out = pipe(state=out.state, prompt="it starts to snow", actions=["NOOP"] * 4)  # expansion
        >>> export_to_video(out.frames[0], "world.mp4", fps=16)
        ```
"""

_OUTPUT_TYPES = ("np", "pil", "pt", "latent")


def prompt_clean(text: str) -> str:
    """Adapted from diffusers.pipelines.wan.pipeline_wan.prompt_clean (without the optional `ftfy` pass)."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class YanGenPipeline(DiffusionPipeline):
    r"""
    Pipeline for Yan-Gen: text-to-video, image-to-video, text-guided expansion and interactive (action-driven)
    world generation.

    Args:
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Tokenizer of the text encoder (umT5's in Wan2.1).
        text_encoder ([`~transformers.PreTrainedModel`]):
            Text encoder: umT5-XXL (`UMT5EncoderModel`) as in Wan2.1, or any encoder whose hidden size equals
            `transformer.config.text_dim` and whose output has `last_hidden_state`.
        vae ([`~diffusers.AutoencoderKLWan`]):
            Wan's causal video VAE.
        transformer ([`YanGenTransformer3DModel`]):
            The denoiser. Causal (`num_frames_per_block` set) for streaming and `state`; bidirectional otherwise.
        scheduler ([`~diffusers.FlowMatchEulerDiscreteScheduler`] or [`~diffusers.UniPCMultistepScheduler`]):
            A flow-matching scheduler. It is copied for every call (and every block), never stepped in place.
        image_encoder ([`~transformers.CLIPVisionModel`], *optional*):
            CLIP vision tower (ViT-H-14 in Wan2.1 I2V) for transformers with an image branch (`image_dim`).
        image_processor ([`~transformers.CLIPImageProcessor`], *optional*):
            Preprocessing for `image_encoder`.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"
    _optional_components = ["image_encoder", "image_processor"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        text_encoder: PreTrainedModel,
        vae: AutoencoderKLWan,
        transformer: YanGenTransformer3DModel,
        scheduler: FlowMatchEulerDiscreteScheduler | UniPCMultistepScheduler,
        image_encoder: CLIPVisionModel | None = None,
        image_processor: CLIPImageProcessor | None = None,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            transformer=transformer,
            scheduler=scheduler,
            image_encoder=image_encoder,
            image_processor=image_processor,
        )
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)

    # ------------------------------------------------------------------ properties
    @property
    def vae_scale_factor_spatial(self) -> int:
        return self.vae.config.scale_factor_spatial if getattr(self, "vae", None) is not None else 8

    @property
    def vae_scale_factor_temporal(self) -> int:
        return self.vae.config.scale_factor_temporal if getattr(self, "vae", None) is not None else 4

    @property
    def action_space(self) -> ActionSpace | None:
        """The transformer's [`ActionSpace`] (what `actions=` accepts), or `None` without an action branch."""
        return self.transformer.action_space

    @property
    def is_causal(self) -> bool:
        """Whether the transformer generates block by block (and so supports `state`)."""
        return self.transformer.is_causal

    @property
    def is_image_to_video(self) -> bool:
        """I2V transformers take the mask and the start image's latents as extra input channels (Wan2.1 I2V)."""
        return self.transformer.config.in_channels != self.vae.config.z_dim

    @property
    def start_frames(self) -> list[str]:
        """Paths of the start images shipped in the model folder (`start_frames/*.png`), if it has any: what an
        image-to-video world can start from in `yan play` and `YanGenEnv` (as `YanSimPipeline.start_frames`)."""
        return shipped_start_frames(self.name_or_path)

    def fingerprint(self) -> str:
        """A short hash of the model configs; a `state` made with other configs is refused."""
        configs = [dict(self.transformer.config), dict(self.vae.config)]
        return hashlib.sha1(json.dumps(configs, sort_keys=True, default=str).encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ encoders
    # Adapted from diffusers.pipelines.wan.pipeline_wan.WanPipeline._get_t5_prompt_embeds
    def _get_prompt_embeds(self, prompt: list[str], max_sequence_length: int, device, dtype) -> torch.Tensor:
        prompt = [prompt_clean(p) for p in prompt]
        text_inputs = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        input_ids, mask = text_inputs.input_ids, text_inputs.attention_mask
        seq_lens = mask.gt(0).sum(dim=1).long()
        encoder_device = get_module_execution_device(self.text_encoder)
        prompt_embeds = self.text_encoder(input_ids.to(encoder_device), attention_mask=mask.to(encoder_device))
        prompt_embeds = prompt_embeds.last_hidden_state.to(dtype=dtype, device=device)
        # as in Wan: states past the prompt's tokens are zeros, not the encoder's padding outputs
        prompt_embeds = [u[:v] for u, v in zip(prompt_embeds, seq_lens)]
        return torch.stack(
            [torch.cat([u, u.new_zeros(max_sequence_length - u.size(0), u.size(1))]) for u in prompt_embeds]
        )

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
        num_videos_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        max_sequence_length: int = 512,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""Encode the prompt (and, for guidance, the negative prompt) into text-encoder states.

        Returns `(prompt_embeds, negative_prompt_embeds)`, each `[batch * num_videos_per_prompt, max_sequence_length,
        hidden]`; `negative_prompt_embeds` is `None` without guidance.
        """
        device = device or self._execution_device
        dtype = dtype or self.text_encoder.dtype
        if prompt_embeds is None:
            prompt = [prompt] if isinstance(prompt, str) else prompt
            prompt_embeds = self._get_prompt_embeds(prompt, max_sequence_length, device, dtype)
        prompt_embeds = prompt_embeds.to(device).repeat_interleave(num_videos_per_prompt, dim=0)
        batch_size = prompt_embeds.shape[0] // num_videos_per_prompt

        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative_prompt = negative_prompt or ""
            negative_prompt = [negative_prompt] * batch_size if isinstance(negative_prompt, str) else negative_prompt
            if len(negative_prompt) != batch_size:
                raise ValueError(
                    f"`negative_prompt` has {len(negative_prompt)} entries but `prompt` has {batch_size}; give one"
                    " negative prompt per prompt (or a single string)."
                )
            negative_prompt_embeds = self._get_prompt_embeds(negative_prompt, max_sequence_length, device, dtype)
        if do_classifier_free_guidance:
            negative_prompt_embeds = negative_prompt_embeds.to(device).repeat_interleave(num_videos_per_prompt, 0)
        else:
            negative_prompt_embeds = None
        return prompt_embeds, negative_prompt_embeds

    def encode_image(self, image, device: torch.device | None = None) -> torch.Tensor:
        """CLIP states of the start image (penultimate layer, as Wan2.1 I2V uses), `[1, tokens, image_dim]`."""
        device = device or self._execution_device
        inputs = self.image_processor(images=image, return_tensors="pt").to(
            get_module_execution_device(self.image_encoder)
        )
        inputs["pixel_values"] = inputs["pixel_values"].to(self.image_encoder.dtype)
        return self.image_encoder(**inputs, output_hidden_states=True).hidden_states[-2].to(device)

    # ------------------------------------------------------------------ latents
    def _latent_stats(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        z_dim = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean).view(1, z_dim, 1, 1, 1).to(device, dtype)
        std = torch.tensor(self.vae.config.latents_std).view(1, z_dim, 1, 1, 1).to(device, dtype)
        return mean, std

    def _normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(z.device, z.dtype)
        return (z - mean) / std

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(z.device, z.dtype)
        return z * std + mean

    def prepare_condition(
        self, image, batch_size: int, height: int, width: int, num_video_frames: int, device
    ) -> torch.Tensor:
        """I2V input channels (Wan2.1): 4 mask channels (1 on the first latent frame) + the latents of
        `[image, black frames...]`, `[batch, 4 + z_dim, num_latent_frames, h, w]`.

        Adapted from diffusers.pipelines.wan.pipeline_wan_i2v.WanImageToVideoPipeline.prepare_latents.
        """
        image = self.video_processor.preprocess(image, height=height, width=width).to(device, dtype=torch.float32)
        image = image[:1].unsqueeze(2)  # one start image for the whole batch: [1, 3, 1, H, W]
        video = torch.cat([image, image.new_zeros(1, 3, num_video_frames - 1, height, width)], dim=2)
        latents = self.vae.encode(video.to(get_module_execution_device(self.vae), self.vae.dtype)).latent_dist.mode()
        latents = self._normalize(latents.to(device, torch.float32)).repeat(batch_size, 1, 1, 1, 1)
        mask = torch.zeros_like(latents[:, :1]).repeat(1, self.vae_scale_factor_temporal, 1, 1, 1)
        mask[:, :, 0] = 1.0
        return torch.cat([mask, latents], dim=1)

    def _decode_stream(self, latents: torch.Tensor, vae_cache: list | None) -> tuple[torch.Tensor, list]:
        """Decode latent frames one by one with the causal VAE decoder, carrying its feature cache.

        Adapted from diffusers.models.autoencoders.autoencoder_kl_wan.AutoencoderKLWan._decode, with the cache
        passed in and returned (a new list; the old one is not modified) instead of living on the VAE, so decoding
        a world in pieces gives the frames of decoding it at once, and worlds can share one VAE.
        """
        vae = self.vae
        if hasattr(vae, "_hf_hook") and hasattr(vae._hf_hook, "pre_forward"):  # model CPU offload
            vae._hf_hook.pre_forward(vae)
        first = vae_cache is None
        cache = [None] * vae._cached_conv_counts["decoder"] if first else list(vae_cache)
        x = vae.post_quant_conv(self._denormalize(latents.to(vae.device, vae.dtype)))
        frames = []
        for i in range(x.shape[2]):
            frames.append(
                vae.decoder(x[:, :, i : i + 1], feat_cache=cache, feat_idx=[0], first_chunk=first and i == 0)
            )
        video = torch.cat(frames, dim=2)
        if vae.config.patch_size is not None:
            video = unpatchify(video, patch_size=vae.config.patch_size)
        return video.clamp(-1.0, 1.0), cache

    # ------------------------------------------------------------------ checks
    def check_inputs(
        self,
        prompt,
        negative_prompt,
        image,
        actions,
        state,
        height,
        width,
        prompt_embeds,
        negative_prompt_embeds,
        guidance_scale,
        output_type,
        callback_on_step_end_tensor_inputs,
    ):
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Cannot forward both `prompt` and `prompt_embeds`; pass only one of the two.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError(
                "Cannot forward both `negative_prompt` and `negative_prompt_embeds`; pass only one of the two."
            )
        if prompt is not None and not isinstance(prompt, (str, list)):
            raise ValueError(f"`prompt` has to be a str or a list of str, got {type(prompt).__name__}.")
        if negative_prompt is not None and not isinstance(negative_prompt, (str, list)):
            raise ValueError(
                f"`negative_prompt` has to be a str or a list of str, got {type(negative_prompt).__name__}."
            )
        if output_type not in _OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {_OUTPUT_TYPES}, got {output_type!r}.")
        if callback_on_step_end_tensor_inputs is not None and not all(
            k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs
        ):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` has to be in {self._callback_tensor_inputs}, got"
                f" {callback_on_step_end_tensor_inputs}."
            )
        if actions is not None and self.transformer.action_encoder is None:
            raise ValueError(
                "`actions` were given but the transformer has no action branch (`transformer.config.action_space` is"
                " None). Convert or load a checkpoint with an action space, or drop `actions`."
            )

        if state is not None:
            if not self.is_causal:
                raise ValueError(
                    "`state` needs a causal transformer (`num_frames_per_block` set); this one is bidirectional and"
                    " makes whole clips only."
                )
            if not isinstance(state, YanGenState):
                raise ValueError(
                    f"`state` must be a YanGenState returned by this pipeline, got {type(state).__name__}."
                )
            if state.fingerprint != self.fingerprint():
                raise ValueError(
                    f"`state` was made with other model configs (fingerprint {state.fingerprint} !="
                    f" {self.fingerprint()}); start a new world instead."
                )
            if image is not None:
                raise ValueError(
                    "`image` starts a new world; it cannot be combined with `state` (which continues one)."
                )
            for name, value, kept in (("height", height, state.height), ("width", width, state.width)):
                if value is not None and value != kept:
                    raise ValueError(
                        f"`{name}`={value} differs from the world's {kept}; a world keeps its resolution."
                    )
            if guidance_scale is not None and (guidance_scale > 1) != (state.negative_prompt_embeds is not None):
                raise ValueError(
                    f"`guidance_scale`={guidance_scale} switches classifier-free guidance "
                    f"{'on' if guidance_scale > 1 else 'off'}, but this world was started with it"
                    f" {'on' if state.negative_prompt_embeds is not None else 'off'} (its KV cache depends on it)."
                )
            return

        if prompt is None and prompt_embeds is None:
            raise ValueError(
                "Provide either `prompt` or `prompt_embeds` to start a world (or `state` to continue one)."
            )
        if self.is_image_to_video and image is None:
            raise ValueError(
                "`image` is required: this transformer is image-to-video (it takes the start image's latents as"
                f" {self.transformer.config.in_channels - self.vae.config.z_dim} extra input channels)."
            )
        if not self.is_image_to_video and image is not None:
            raise ValueError(
                "`image` was given but this transformer is text-to-video; drop `image` or use an I2V model."
            )
        if image is not None and self.transformer.config.image_dim is not None and self.image_encoder is None:
            raise ValueError(
                "`image` needs `image_encoder` and `image_processor` for this transformer's image branch."
            )
        multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]
        height, width = 480 if height is None else height, 832 if width is None else width
        if height % multiple != 0 or width % multiple != 0:
            raise ValueError(f"`height` and `width` must be multiples of {multiple}, got {height} and {width}.")

    def _num_latent_frames(self, num_frames: int | None, num_actions: int | None, new_world: bool) -> int:
        """Latent frames to generate in this call, from `num_frames` (video frames) and/or the number of actions.

        A new world's first latent frame decodes to 1 video frame and every later one to `vae_scale_factor_temporal`
        frames (Wan's causal VAE), so a new world has `1 + 4 * (latent_frames - 1)` video frames and a continuation
        `4 * latent_frames`. Causal models generate whole blocks of `num_frames_per_block` latent frames and take one
        action per block; bidirectional models take one action per latent frame.
        """
        ratio = self.vae_scale_factor_temporal
        block = self.transformer.config.num_frames_per_block or 1

        def video_frames(latent_frames):
            return 1 + ratio * (latent_frames - 1) if new_world else ratio * latent_frames

        if num_actions is not None:
            latent_frames = num_actions * block
            if num_frames is not None and num_frames != video_frames(latent_frames):
                raise ValueError(
                    f"`num_frames`={num_frames} does not match the {num_actions} `actions` (one per block of {block}"
                    f" latent frame(s) = {video_frames(latent_frames)} video frames); drop `num_frames` or match it."
                )
            return latent_frames
        if num_frames is None:
            if not new_world:
                return block  # one block per continuation call
            # Wan2.1's default clip: 81 video frames = 21 latent frames (rounded up to whole blocks)
            return -(-21 // block) * block
        examples = [video_frames(k * block) for k in (1, 2, 3)]
        if new_world and (num_frames - 1) % ratio != 0:
            raise ValueError(
                f"`num_frames`={num_frames} cannot be made by the VAE: a new video has 1 + {ratio}*k frames"
                f" (e.g. {examples})."
            )
        if not new_world and num_frames % ratio != 0:
            raise ValueError(
                f"`num_frames`={num_frames} cannot be made by the VAE: a continuation has a multiple of {ratio}"
                f" frames (e.g. {examples})."
            )
        latent_frames = (num_frames - 1) // ratio + 1 if new_world else num_frames // ratio
        if latent_frames % block != 0:
            raise ValueError(
                f"`num_frames`={num_frames} is {latent_frames} latent frames, not whole blocks of {block}; use e.g."
                f" {examples}."
            )
        return latent_frames

    def _encode_actions(self, actions, batch_size: int, device) -> torch.Tensor | None:
        """`[batch, num_actions, action_dim]` from anything `ActionSpace.encode_sequence` takes, or a tensor
        `[batch, num_actions, action_dim]` (one sequence per video)."""
        if actions is None:
            return None
        if isinstance(actions, torch.Tensor) and actions.ndim == 3:
            if actions.shape[0] != batch_size or actions.shape[2] != self.action_space.dim:
                raise ValueError(
                    f"`actions` as a 3-D tensor must be [batch_size={batch_size}, num_actions,"
                    f" {self.action_space.dim}], got {tuple(actions.shape)}."
                )
            encoded = torch.stack(
                [self.action_space.encode_sequence(a, arg=f"actions[{i}]") for i, a in enumerate(actions)]
            )
        else:
            encoded = self.action_space.encode_sequence(actions).unsqueeze(0).expand(batch_size, -1, -1)
        return encoded.to(device)

    # ------------------------------------------------------------------ denoising
    def _denoise(
        self,
        latents,
        condition,
        timesteps,
        scheduler,
        prompt_embeds,
        image_embeds,
        actions,
        kv_cache,
        guidance_scale,
        progress_bar,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
        step_offset: int,
    ):
        """Run the sampler over `latents` (one clip or one block). With guidance, the conditional and
        unconditional passes run as one batch `[uncond; cond]` (also the layout of the KV cache)."""
        do_cfg = guidance_scale > 1
        dtype = self.transformer.dtype
        for i, t in enumerate(timesteps):
            model_input = latents if condition is None else torch.cat([latents, condition], dim=1)
            if do_cfg:
                model_input = torch.cat([model_input, model_input])
            noise_pred = self.transformer(
                hidden_states=model_input.to(dtype),
                timestep=t.expand(model_input.shape[0]),
                encoder_hidden_states=prompt_embeds,
                encoder_hidden_states_image=image_embeds,
                actions=actions,
                kv_cache=kv_cache,
                return_dict=False,
            )[0].float()
            if do_cfg:
                noise_uncond, noise_cond = noise_pred.chunk(2)
                noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
            latents = scheduler.step(noise_pred, t, latents, return_dict=False)[0]

            if callback_on_step_end is not None:
                callback_kwargs = {k: {"latents": latents}[k] for k in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, step_offset + i, t, callback_kwargs)
                latents = callback_outputs.pop("latents", latents)
            progress_bar.update()
        return latents

    # ------------------------------------------------------------------ the call
    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        image: PIL.Image.Image | np.ndarray | torch.Tensor | None = None,
        actions: Any = None,
        state: YanGenState | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        timesteps: list[float] | None = None,
        guidance_scale: float | None = None,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        max_sequence_length: int = 512,
    ) -> YanGenPipelineOutput | tuple:
        r"""
        Generate a video, or continue a world.

        Args:
            prompt (`str` or `list[str]`): what to generate; with `state`, a new prompt for the rest of the world
                (text-guided expansion). Hierarchical captions (global + local) go here as one string.
            negative_prompt (`str` or `list[str]`): the prompt guidance steers away from (with `guidance_scale > 1`).
            image (PIL image, array or tensor): the start image, for image-to-video transformers.
            actions: one action per block (causal transformers; a block is `num_frames_per_block` latent frames)
                or per latent frame (bidirectional ones), in any form `pipe.action_space.encode_sequence` takes,
                e.g. `["MOVE_FORWARD", "TURN_LEFT+ATTACK"]`; or a tensor `[batch, num_actions, action_dim]`.
            state (`YanGenState`): the `state` of an earlier output, to continue that world (causal transformers).
            height, width (`int`): resolution of a new world, default 480x832 (Wan2.1's 480p).
            num_frames (`int`): video frames to make. A new world has `1 + 4k` frames, a continuation `4k`, always
                whole blocks. Default: from `actions`; else 81 for a new world, one block for a continuation.
            num_inference_steps (`int`): sampler steps (per block for causal models). Default 50 (Wan), or the
                world's setting when continuing.
            timesteps (`list[float]`): an explicit timestep list instead of `num_inference_steps`, for distilled
                few-step checkpoints (e.g. `[1000, 750, 500, 250]` after Self-Forcing/DMD).
            guidance_scale (`float`): classifier-free guidance; `> 1` enables it (base models), `1.0` disables it
                (distilled models). Default 5.0 (Wan), or the world's setting when continuing.
            num_videos_per_prompt (`int`): videos per prompt.
            generator (`torch.Generator`): seeds a new world's noise. When continuing, the noise comes from the
                state's RNG (so chained calls equal one call) and `generator` is ignored.
            latents (`torch.Tensor`): pre-drawn noise `[batch, z_dim, latent_frames, h, w]` for this call.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`): pre-computed text states.
            output_type (`str`): `"np"`, `"pil"`, `"pt"` or `"latent"`.
            return_dict (`bool`): return a [`YanGenPipelineOutput`] instead of a tuple `(frames, state)`.
            attention_kwargs (`dict`): accepted for diffusers compatibility; unused.
            callback_on_step_end (`Callable`): called after every sampler step as
                `callback(pipe, step, timestep, callback_kwargs)`; may return a new `"latents"`.
            callback_on_step_end_tensor_inputs (`list[str]`): tensors passed in `callback_kwargs`.
            max_sequence_length (`int`): text tokens (512 for umT5 in Wan2.1).

        Examples:
        """
        # 1. check inputs
        self.check_inputs(
            prompt,
            negative_prompt,
            image,
            actions,
            state,
            height,
            width,
            prompt_embeds,
            negative_prompt_embeds,
            guidance_scale,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        device = self._execution_device
        new_world = state is None
        if new_world:
            height, width = 480 if height is None else height, 832 if width is None else width
            guidance_scale = 5.0 if guidance_scale is None else guidance_scale
            num_inference_steps = 50 if num_inference_steps is None and timesteps is None else num_inference_steps
        else:
            height, width = state.height, state.width
            guidance_scale = state.guidance_scale if guidance_scale is None else guidance_scale
            if num_inference_steps is None and timesteps is None:
                num_inference_steps, timesteps = state.num_inference_steps, state.timesteps
        do_cfg = guidance_scale > 1

        # 2. encode the prompt (a new world, or expansion of a running one) and the start image
        transformer_dtype = self.transformer.dtype
        if prompt is not None or prompt_embeds is not None:
            prompt_embeds, negative_prompt_embeds = self.encode_prompt(
                prompt,
                negative_prompt,
                do_classifier_free_guidance=do_cfg,
                num_videos_per_prompt=num_videos_per_prompt,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                max_sequence_length=max_sequence_length,
                device=device,
                dtype=transformer_dtype,
            )
            if not new_world and prompt_embeds.shape[0] != state.batch_size:
                raise ValueError(
                    f"`prompt` makes a batch of {prompt_embeds.shape[0]} but the world has {state.batch_size} videos."
                )
        else:
            prompt_embeds, negative_prompt_embeds = state.prompt_embeds, state.negative_prompt_embeds
        batch_size = prompt_embeds.shape[0]

        image_embeds = None if new_world else state.image_embeds
        if new_world and image is not None and self.transformer.config.image_dim is not None:
            image_embeds = self.encode_image(image, device).repeat(batch_size, 1, 1).to(transformer_dtype)

        actions = self._encode_actions(actions, batch_size, device)
        num_latent_frames = self._num_latent_frames(
            num_frames, None if actions is None else actions.shape[1], new_world
        )
        if actions is not None:
            actions = actions.to(transformer_dtype)

        # the batch the transformer sees: [uncond; cond] with guidance
        model_prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds]) if do_cfg else prompt_embeds
        model_image_embeds = None
        if image_embeds is not None:
            model_image_embeds = torch.cat([image_embeds, image_embeds]) if do_cfg else image_embeds

        def model_actions(a):
            return None if a is None else (torch.cat([a, a]) if do_cfg else a)

        # 3. noise: drawn on the CPU from the world's own generator, block by block, so chained calls draw the
        #    same numbers as one call and results do not depend on the device
        if new_world:
            rng = torch.Generator()
            if generator is not None:
                if not isinstance(generator, torch.Generator):
                    raise TypeError(f"`generator` must be one torch.Generator, got {type(generator).__name__}.")
                if generator.device.type == "cpu":
                    rng.set_state(generator.get_state())
                else:
                    rng.manual_seed(generator.initial_seed())
            else:
                rng.seed()
        else:
            rng = torch.Generator()
            rng.set_state(state.generator_state)
        z_dim = self.vae.config.z_dim
        latent_h, latent_w = height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial
        if latents is not None and tuple(latents.shape) != (batch_size, z_dim, num_latent_frames, latent_h, latent_w):
            raise ValueError(
                f"`latents` must have shape {(batch_size, z_dim, num_latent_frames, latent_h, latent_w)}, got"
                f" {tuple(latents.shape)}."
            )

        def draw_noise(start, count):
            if latents is not None:
                return latents[:, :, start : start + count].to(device, torch.float32)
            shape = (batch_size, z_dim, count, latent_h, latent_w)
            return randn_tensor(shape, generator=rng, device=torch.device("cpu"), dtype=torch.float32).to(device)

        def sampler():
            scheduler = copy.deepcopy(self.scheduler)  # the pipeline's scheduler is never stepped
            steps, _ = retrieve_timesteps(scheduler, num_inference_steps, device, timesteps=timesteps)
            return scheduler, steps

        # 4a. bidirectional model: one clip, as diffusers' WanPipeline / WanImageToVideoPipeline
        if not self.is_causal:
            num_video_frames = 1 + self.vae_scale_factor_temporal * (num_latent_frames - 1)
            condition = None
            if image is not None:
                condition = self.prepare_condition(image, batch_size, height, width, num_video_frames, device)
                condition = condition.to(transformer_dtype)
            scheduler, steps = sampler()
            with self.progress_bar(total=len(steps)) as progress_bar:
                new_latents = self._denoise(
                    draw_noise(0, num_latent_frames),
                    condition,
                    steps,
                    scheduler,
                    model_prompt_embeds,
                    model_image_embeds,
                    model_actions(actions),
                    None,
                    guidance_scale,
                    progress_bar,
                    callback_on_step_end,
                    callback_on_step_end_tensor_inputs,
                    0,
                )
            if output_type == "latent":
                frames = new_latents
            else:
                z = self._denormalize(new_latents.to(get_module_execution_device(self.vae), self.vae.dtype))
                video = self.vae.decode(z, return_dict=False)[0]
                frames = self.video_processor.postprocess_video(video, output_type=output_type)
            self.maybe_free_model_hooks()
            return YanGenPipelineOutput(frames=frames, state=None) if return_dict else (frames, None)

        # 4b. causal model: block by block over the KV cache
        block = self.transformer.config.num_frames_per_block
        num_blocks = num_latent_frames // block
        if new_world:
            kv_cache, vae_cache, frame_index, condition = None, None, 0, None
            if image is not None:
                # the start image's latents condition latent frame 0; every later frame gets the latents of the
                # black frames that follow it (Wan encodes [image, black...]; we encode one latent frame of black
                # once and reuse it, so the condition does not depend on how long the world runs)
                full = self.prepare_condition(
                    image, batch_size, height, width, 1 + self.vae_scale_factor_temporal, device
                )
                condition = (full[:, :, :1].to(transformer_dtype), full[:, :, 1:2].to(transformer_dtype))
        else:
            kv_cache, vae_cache, frame_index, condition = (
                state.kv_cache,
                state.vae_cache,
                state.frame_index,
                state.condition,
            )

        new_latents, step_offset = [], 0
        with self.progress_bar(total=num_blocks * (len(timesteps) if timesteps else num_inference_steps)) as bar:
            for b in range(num_blocks):
                block_condition = None
                if condition is not None:
                    first, later = condition
                    block_condition = torch.cat([first if frame_index + f == 0 else later for f in range(block)], 2)
                block_actions = None
                if actions is not None:
                    block_actions = model_actions(actions[:, b : b + 1].repeat_interleave(block, dim=1))
                scheduler, steps = sampler()
                clean = self._denoise(
                    draw_noise(b * block, block),
                    block_condition,
                    steps,
                    scheduler,
                    model_prompt_embeds,
                    model_image_embeds,
                    block_actions,
                    kv_cache,
                    guidance_scale,
                    bar,
                    callback_on_step_end,
                    callback_on_step_end_tensor_inputs,
                    step_offset,
                )
                step_offset += len(steps)
                # add the clean block to the context: one pass at timestep 0 (Self-Forcing / CausVid)
                context = clean if block_condition is None else torch.cat([clean, block_condition], dim=1)
                if do_cfg:
                    context = torch.cat([context, context])
                kv_cache = self.transformer(
                    hidden_states=context.to(transformer_dtype),
                    timestep=torch.zeros(context.shape[0], device=device),
                    encoder_hidden_states=model_prompt_embeds,
                    encoder_hidden_states_image=model_image_embeds,
                    actions=block_actions,
                    kv_cache=kv_cache,
                    return_kv_cache=True,
                ).kv_cache
                new_latents.append(clean)
                frame_index += block
        new_latents = torch.cat(new_latents, dim=2)

        # 5. decode the new latent frames with the streaming VAE decoder (also for "latent" output, to keep the
        #    decoder's cache in step with the world)
        if self.vae.use_tiling:
            logger.warning("VAE tiling is not used for streaming (causal) decoding; frames are decoded whole.")
        video, vae_cache = self._decode_stream(new_latents, vae_cache)
        if output_type == "latent":
            frames = new_latents
        else:
            frames = self.video_processor.postprocess_video(video.float(), output_type=output_type)

        new_state = YanGenState(
            kv_cache=kv_cache,
            vae_cache=vae_cache,
            generator_state=rng.get_state(),
            frame_index=frame_index,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            image_embeds=image_embeds,
            condition=condition,
            height=height,
            width=width,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            timesteps=None if timesteps is None else tuple(float(t) for t in timesteps),
            fingerprint=self.fingerprint(),
        )
        self.maybe_free_model_hooks()
        if not return_dict:
            return frames, new_state
        return YanGenPipelineOutput(frames=frames, state=new_state)
