from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class YanSimState:
    """Everything one simulated world needs to continue: pass it back as ``state=`` to the pipeline.

    A state is never modified by the pipeline: every call returns a new one, so a world can be branched (call
    twice from the same state with different actions) or replayed (the same state and actions give the same
    frames). Its memory is bounded: the KV cache keeps at most ``unet.config.temporal_cache_size`` past frames.

    Attributes:
        kv_cache: keys/values of the clean past latent frames, per temporal attention layer (bounded window).
        window: the shift window, ``[B, C, S-1, h, w]`` latent frames at staggered noise levels (oldest first;
            the oldest has had ``S-1`` of its ``S`` denoising steps). Empty at ``S == 1``.
        pending_latent: the newest clean latent frame ``[B, C, 1, h, w]``, not yet in the KV cache (it enters the
            cache on the next model call, where its keys/values are computed at noise level 0 for free).
        pending_action: the encoded action that produced ``pending_latent`` (zeros for the start frame).
        vae_cache: the VAE decoder's streaming cache (``None`` after ``output_type="latent"`` calls; decoding then
            restarts from ``pending_latent``).
        generator_state: the RNG state for the noise of future frames.
        frame_index: number of latent frames of this world so far (the start frame counts as 0).
        num_inference_steps: the denoising steps ``S`` this world runs with (fixed for the life of a world).
        fingerprint: identifies the model config the state belongs to.
    """

    kv_cache: Any
    window: torch.Tensor
    pending_latent: torch.Tensor
    pending_action: torch.Tensor
    vae_cache: Any
    generator_state: torch.Tensor
    frame_index: int
    num_inference_steps: int
    fingerprint: str
    extras: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.pending_latent.shape[0]


@dataclass
class YanSimPipelineOutput(BaseOutput):
    """Output of :class:`YanSimPipeline`.

    Args:
        frames: the new frames of this call, ``temporal_compression_ratio`` frames per action: a list (one per
            world in the batch) of lists of PIL images, a numpy array ``[B, F, H, W, 3]`` in [0, 1], a tensor
            ``[B, F, 3, H, W]`` in [0, 1], or the new latent frames ``[B, C, N, h, w]`` for ``output_type="latent"``.
        state: pass it back as ``state=`` to continue these worlds.
    """

    frames: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor
    state: YanSimState
