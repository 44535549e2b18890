from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass(frozen=True)
class YanGenState:
    """Everything one generated world needs to continue: pass it back as ``state=`` to [`YanGenPipeline`].

    A state is never modified: every call returns a new one, so a world can be branched (continue the same state
    with different actions or prompts) or replayed. Its memory is bounded: the KV cache keeps at most
    ``transformer.config.kv_cache_max_frames`` latent frames and the VAE cache a few feature frames.

    Attributes:
        kv_cache: the transformer's [`YanGenKVCache`] (self-attention keys/values of the clean past frames).
        vae_cache: the VAE decoder's streaming feature cache (one entry per causal conv).
        generator_state: the RNG state for the noise of future blocks.
        frame_index: latent frames generated in this world so far.
        prompt_embeds: text states used for new blocks (replaced when a call passes a new prompt: expansion).
        negative_prompt_embeds: the unconditional text states for classifier-free guidance, or `None`.
        image_embeds: CLIP image states of the start image (I2V models), or `None`.
        condition: I2V models: the mask + image-latent channels for the first latent frame and for every later
            frame, ``(first, later)``; `None` for T2V models.
        height, width: the world's resolution in pixels.
        guidance_scale, num_inference_steps, timesteps: the sampling settings of the last call (a call that does
            not pass them keeps them).
        fingerprint: identifies the model configs the state belongs to.
    """

    kv_cache: Any
    vae_cache: Any
    generator_state: torch.Tensor
    frame_index: int
    prompt_embeds: torch.Tensor | None
    negative_prompt_embeds: torch.Tensor | None
    image_embeds: torch.Tensor | None
    condition: tuple[torch.Tensor, torch.Tensor] | None
    height: int
    width: int
    guidance_scale: float
    num_inference_steps: int
    timesteps: tuple[float, ...] | None
    fingerprint: str

    @property
    def batch_size(self) -> int:
        return self.kv_cache.batch_size // (2 if self.negative_prompt_embeds is not None else 1)


@dataclass
class YanGenPipelineOutput(BaseOutput):
    """Output of [`YanGenPipeline`].

    Args:
        frames: the new video frames of this call: a list (one per video) of lists of PIL images, a numpy array
            ``[B, F, H, W, 3]`` in [0, 1], a tensor ``[B, F, 3, H, W]``, or latents ``[B, C, f, h, w]`` for
            ``output_type="latent"``.
        state: pass it back as ``state=`` to continue these worlds (causal transformers only; `None` otherwise).
    """

    frames: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor
    state: YanGenState | None = None
