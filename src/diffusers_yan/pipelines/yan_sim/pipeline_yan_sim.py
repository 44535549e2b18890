"""YanSimPipeline: real-time, action-conditioned next-frame simulation of a game world.

The pipeline is thin over its models. One call takes a start image (or the ``state`` of a running world) and a
sequence of actions, and returns the new frames plus a new state. Inside, it runs *shift-window denoising*
(seed slides, "Shift Window Denoising Inference"): a window of ``S = num_inference_steps`` latent frames sits at
staggered noise levels; each UNet call advances every frame in the window by one DDIM step, so the oldest one
comes out clean. One model call per action, one new latent frame per call, and the clean frames' temporal
keys/values go to a bounded KV cache, so time and memory per frame stay flat however long the world runs.
"""

import copy
import hashlib
import json
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from tqdm.auto import tqdm

from ...actions import ActionSpace
from ...models.autoencoders.autoencoder_kl_yan import AutoencoderKLYan
from ...models.unets.unet_yan_sim import YanSimUNetModel
from ..pipeline_utils import shipped_start_frames
from .pipeline_output import YanSimPipelineOutput, YanSimState


logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from diffusers_yan import BUNDLED_MODELS, YanSimPipeline
        >>> from diffusers.utils import export_to_video, load_image

        >>> pipe = YanSimPipeline.from_pretrained(BUNDLED_MODELS["yan-sim-doom"])
        >>> start = load_image(pipe.start_frames[0])
        >>> out = pipe(image=start, actions=["MOVE_FORWARD"] * 8, generator=torch.Generator().manual_seed(0))
        >>> out = pipe(state=out.state, actions=["TURN_LEFT+ATTACK"] * 4)  # continue the same world
        >>> export_to_video(out.frames[0], "doom.mp4", fps=15)
        ```
"""


def _to_pil(image: Any, arg: str = "image") -> PIL.Image.Image:
    """Validate one image (PIL, numpy HWC, or tensor CHW) and turn it into an RGB PIL image."""
    if isinstance(image, PIL.Image.Image):
        if image.mode not in ("RGB", "RGBA", "L", "P", "LA", "I;16", "I", "F", "CMYK", "YCbCr"):
            raise ValueError(f"`{arg}`: unsupported PIL mode {image.mode!r}.")
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"`{arg}`: a tensor image must be [C, H, W] with C in (1, 3, 4), got shape {tuple(image.shape)}."
            )
        t = image.detach().float().cpu()
        if not torch.isfinite(t).all():
            raise ValueError(f"`{arg}`: the tensor image contains NaN or inf.")
        if t.min() < -1.0001 or t.max() > 1.0001:
            raise ValueError(
                f"`{arg}`: tensor images must be in [0, 1] or [-1, 1], got [{t.min():.3g}, {t.max():.3g}]."
            )
        if t.min() < 0:
            t = (t + 1) / 2
        t = t[:3] if t.shape[0] >= 3 else t.expand(3, -1, -1)
        image = t.permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"`{arg}`: a numpy image must be [H, W], [H, W, C] with C in (1, 3, 4), got shape {arr.shape}."
            )
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"`{arg}`: empty image of shape {arr.shape}.")
        if arr.dtype == np.uint8:
            pass
        elif np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"`{arg}`: float numpy images must be finite and in [0, 1].")
            arr = (arr * 255).round().astype(np.uint8)
        else:
            raise ValueError(f"`{arg}`: numpy images must be uint8 or float in [0, 1], got dtype {arr.dtype}.")
        arr = arr[..., :3] if arr.shape[-1] >= 3 else np.repeat(arr, 3, axis=-1)
        return PIL.Image.fromarray(np.ascontiguousarray(arr))
    raise TypeError(
        f"`{arg}` must be a PIL image, a numpy array [H, W, C] or a tensor [C, H, W], got {type(image).__name__}."
    )


def _check_guidance_scale(value, arg: str = "guidance_scale") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 1.0:
        raise ValueError(f"`{arg}` must be a finite number >= 1 (1 = no action guidance), got {value!r}.")


def _check_guidance_steps(value, arg: str = "guidance_steps") -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{arg}` must be None (every step) or an int >= 1, got {value!r}.")


class YanSimPipeline(DiffusionPipeline):
    r"""
    Yan-Sim: an action-conditioned, real-time world simulator (causal VAE + action-cross-attention UNet + DDIM).

    Args:
        vae ([`AutoencoderKLYan`]): causal video VAE; decodes latent frames as they stream.
        unet ([`YanSimUNetModel`]): denoiser with spatial, action cross- and causal temporal attention; its config
            holds the action space (``pipe.action_space``).
        scheduler ([`~diffusers.DDIMScheduler`]): deterministic few-step sampler (4 steps, trailing spacing).
        default_guidance_scale (`float`, defaults to 1.0): the action guidance a call uses when it passes no
            ``guidance_scale`` (saved in ``model_index.json``, so a model folder carries the scale it was evaluated
            with).
        default_guidance_steps (`int`, *optional*): likewise for ``guidance_steps`` (``None``: every step).

    The interactive contract: N chained one-action calls give the same frames as one N-action call for the same
    seed; a future action never changes a past frame; no per-world data lives on the pipeline, so one pipeline
    serves many worlds (pass each world's ``state``).
    """

    model_cpu_offload_seq = "unet->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        vae: AutoencoderKLYan,
        unet: YanSimUNetModel,
        scheduler: DDIMScheduler,
        default_guidance_scale: float = 1.0,
        default_guidance_steps: int | None = None,
    ):
        super().__init__()
        _check_guidance_scale(default_guidance_scale, arg="default_guidance_scale")
        _check_guidance_steps(default_guidance_steps, arg="default_guidance_steps")
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        self.register_to_config(
            default_guidance_scale=float(default_guidance_scale), default_guidance_steps=default_guidance_steps
        )
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)
        self._fingerprint = None

    # ------------------------------------------------------------------ properties derived from the configs
    @property
    def action_space(self) -> ActionSpace:
        """The model's action space (button names, axes, key bindings)."""
        return self.unet.action_space

    @property
    def vae_scale_factor_spatial(self) -> int:
        return self.vae.config.spatial_compression_ratio if getattr(self, "vae", None) is not None else 32

    @property
    def vae_scale_factor_temporal(self) -> int:
        return self.vae.config.temporal_compression_ratio if getattr(self, "vae", None) is not None else 2

    @property
    def frames_per_action(self) -> int:
        """Video frames produced per action: one latent frame per action, decoded to this many frames."""
        return self.vae_scale_factor_temporal

    @property
    def resolution(self) -> tuple[int, int]:
        """``(height, width)`` of the frames, from the UNet's latent ``sample_size`` and the VAE's compression."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return h * self.vae_scale_factor_spatial, w * self.vae_scale_factor_spatial

    @property
    def start_frames(self) -> list[str]:
        """Paths of the real start frames shipped in the model folder (``start_frames/*.png``), if it has any."""
        return shipped_start_frames(self.name_or_path)

    def fingerprint(self) -> str:
        """A short hash of the model configs; a state made with another config is refused."""
        if self._fingerprint is None:
            blob = json.dumps(
                {"unet": dict(self.unet.config), "vae": dict(self.vae.config)}, sort_keys=True, default=str
            )
            self._fingerprint = hashlib.sha1(blob.encode()).hexdigest()[:16]
        return self._fingerprint

    # ------------------------------------------------------------------ input checks
    def check_inputs(
        self,
        image,
        actions,
        state,
        num_inference_steps,
        output_type,
        latents,
        callback_on_step_end_tensor_inputs,
        guidance_scale=None,
        guidance_steps=None,
    ):
        if guidance_scale is not None:
            _check_guidance_scale(guidance_scale)
        _check_guidance_steps(guidance_steps)
        if image is None and state is None:
            raise ValueError("Pass `image` to start a world or `state` to continue one; both are None.")
        if image is not None and state is not None:
            raise ValueError("Pass either `image` (start a new world) or `state` (continue one), not both.")
        if (
            not isinstance(num_inference_steps, int)
            or isinstance(num_inference_steps, bool)
            or num_inference_steps < 1
        ):
            raise ValueError(f"`num_inference_steps` must be an int >= 1, got {num_inference_steps!r}.")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"`output_type` must be one of 'pil', 'np', 'pt', 'latent', got {output_type!r}.")
        if state is not None:
            if not isinstance(state, YanSimState):
                raise TypeError(
                    f"`state` must be a YanSimState returned by this pipeline, got {type(state).__name__}."
                )
            if state.fingerprint != self.fingerprint():
                raise ValueError(
                    "`state` was made by a model with a different config (fingerprint"
                    f" {state.fingerprint} != {self.fingerprint()}); start a new world with `image=`."
                )
            if state.num_inference_steps != num_inference_steps:
                raise ValueError(
                    f"`num_inference_steps`={num_inference_steps} differs from the {state.num_inference_steps} steps"
                    " this world was started with; the shift window's noise levels are fixed for the life of a world."
                )
        if latents is not None and not isinstance(latents, torch.Tensor):
            raise TypeError(f"`latents` must be a torch.Tensor, got {type(latents).__name__}.")
        if callback_on_step_end_tensor_inputs is not None and not all(
            k in self._callback_tensor_inputs for k in callback_on_step_end_tensor_inputs
        ):
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be a subset of {self._callback_tensor_inputs}, got"
                f" {callback_on_step_end_tensor_inputs}."
            )

    def prepare_actions(self, actions, batch_size: int) -> torch.Tensor:
        """Encode ``actions`` to ``[B, N, action_dim]`` (a sequence shared by the batch, or one per world)."""
        if isinstance(actions, torch.Tensor) and actions.ndim == 3:
            if actions.shape[0] != batch_size or actions.shape[-1] != self.action_space.dim:
                raise ValueError(
                    f"`actions` as a 3-D tensor must be [batch={batch_size}, steps, {self.action_space.dim}], got"
                    f" {tuple(actions.shape)}."
                )
            return torch.stack([self.action_space.encode_sequence(a) for a in actions])
        encoded = self.action_space.encode_sequence(actions, arg="actions")
        return encoded.unsqueeze(0).expand(batch_size, -1, -1)

    def preprocess_image(self, image) -> torch.Tensor:
        """Images (any size) -> ``[B, 3, 1, H, W]`` in [-1, 1], resized and center-cropped to the model's resolution."""
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            images = list(image)
        elif isinstance(image, np.ndarray) and image.ndim == 4:
            images = list(image)
        if len(images) == 0:
            raise ValueError("`image` is an empty list.")
        pils = [_to_pil(im, arg=f"image[{i}]" if len(images) > 1 else "image") for i, im in enumerate(images)]
        height, width = self.resolution
        pixels = self.video_processor.preprocess(pils, height=height, width=width, resize_mode="crop")
        return pixels.unsqueeze(2)

    # ------------------------------------------------------------------ latent helpers
    def _normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def _denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.vae.config.scaling_factor + self.vae.config.shift_factor

    def _draw_noise(self, shape, generator, latents, drawn: int, dtype, device) -> torch.Tensor:
        if latents is not None:
            return latents[:, :, drawn : drawn + 1].to(device=device, dtype=dtype)
        return randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32).to(
            device=device, dtype=dtype
        )

    def _predict(
        self, model_in, t, frame_actions, kv_cache, cache_frames: int, guidance_scale: float | None, num_guided: int
    ):
        """One model call -> (prediction for the window frames, new KV cache).

        With ``guidance_scale``, the batch is doubled: the second half sees the UNet's null action on its window
        frames (the pending clean frame keeps its own action, so both halves put the same keys/values in the cache
        and the first half's cache is kept), and the ``num_guided`` oldest window frames (the least noisy ones) get
        ``uncond + scale * (cond - uncond)``. One doubled call was faster on CPU than a second, shorter call over
        those frames only (benchmarks/bench_yan_sim.py --guidance).
        """
        if guidance_scale is None or num_guided == 0:
            out = self.unet(model_in, t, actions=frame_actions, kv_cache=kv_cache, cache_frames=cache_frames)
            return out.sample[:, :, cache_frames:], out.kv_cache
        batch_size = model_in.shape[0]
        null_actions = frame_actions.clone()
        null_actions[:, cache_frames:] = self.unet.null_action_vector().to(null_actions)
        out = self.unet(
            torch.cat([model_in, model_in]),
            torch.cat([t, t]),
            actions=torch.cat([frame_actions, null_actions]),
            kv_cache=kv_cache.repeat_batch(2) if kv_cache is not None else None,
            cache_frames=cache_frames,
        )
        cond, uncond = out.sample[:, :, cache_frames:].chunk(2)
        new_cache = out.kv_cache.select_batch(0, batch_size) if out.kv_cache is not None else None
        guided = uncond[:, :, :num_guided] + guidance_scale * (cond[:, :, :num_guided] - uncond[:, :, :num_guided])
        return torch.cat([guided, cond[:, :, num_guided:]], dim=2), new_cache

    # ------------------------------------------------------------------ the call
    @torch.no_grad()
    def __call__(
        self,
        image=None,
        actions=None,
        state: YanSimState | None = None,
        num_inference_steps: int = 4,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        guidance_scale: float | None = None,
        guidance_steps: int | None = None,
    ):
        r"""
        Start a world from ``image`` or continue one from ``state``, and play ``actions`` in it.

        Args:
            image (PIL image, numpy array, tensor, or a list of them): the start frame(s) of new world(s); any size,
                resized and center-cropped to the model's resolution. Numpy: ``[H, W, C]`` uint8 or float in [0, 1];
                tensor: ``[C, H, W]`` in [0, 1] or [-1, 1]. Several images start a batch of worlds.
            actions: one action per new latent frame, in any form :meth:`ActionSpace.encode_sequence` accepts
                (e.g. ``["MOVE_FORWARD", "TURN_LEFT+ATTACK"]``, ``"MOVE_FORWARD*8,TURN_LEFT*4"``, a tensor
                ``[N, action_dim]``, or ``[B, N, action_dim]`` for one sequence per world).
            state (`YanSimState`): the ``state`` of an earlier output, to continue that world.
            num_inference_steps (`int`, defaults to 4): DDIM steps per frame, which is also the shift-window length.
                Fixed for the life of a world.
            generator (`torch.Generator`): seeds the noise of a new world (ignored when continuing: the state carries
                its own RNG, so continuing is deterministic).
            latents (`torch.Tensor`): pre-drawn noise for the new frames, ``[B, C, k, h, w]`` with ``k`` the number
                of noise frames this call draws (``N + S - 1`` when starting a world, ``N`` when continuing).
            output_type (`str`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict (`bool`): return a [`YanSimPipelineOutput`] instead of a tuple ``(frames, state)``.
            callback_on_step_end (`Callable`): ``callback(pipe, step, timestep, callback_kwargs)`` after every model
                call; ``callback_kwargs["latents"]`` is the shift window, and a returned ``"latents"`` replaces it.
            callback_on_step_end_tensor_inputs (`list[str]`): tensors passed to the callback (default ``["latents"]``).
            guidance_scale (`float`, *optional*): action guidance. Above 1, every model call also runs the window
                with the UNet's ``null_action`` (its config; no button held when unset) and extrapolates
                ``uncond + scale * (cond - uncond)``, so the frames follow the actions more strongly, at twice the
                batch per call. ``None`` uses the model folder's ``default_guidance_scale``; 1 turns it off. May
                change between calls of one world.
            guidance_steps (`int`, *optional*): guide only the last ``guidance_steps`` of each frame's
                ``num_inference_steps`` denoising steps (the low-noise end, where guidance sharpens the response to
                the action without pushing the coarse layout off course). ``None`` uses the model folder's
                ``default_guidance_steps`` (itself ``None``: every step).

        Returns:
            [`YanSimPipelineOutput`] with the ``frames`` of this call (``frames_per_action`` per action) and the new
            ``state``.
        """
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        # 1. check inputs
        self.check_inputs(
            image,
            actions,
            state,
            num_inference_steps,
            output_type,
            latents,
            callback_on_step_end_tensor_inputs,
            guidance_scale,
            guidance_steps,
        )
        if guidance_scale is None:
            guidance_scale = self.config.default_guidance_scale
        if guidance_steps is None:
            guidance_steps = self.config.default_guidance_steps
        do_guidance = guidance_scale > 1.0
        device = self._execution_device
        dtype = self.unet.dtype
        scheduler = copy.copy(self.scheduler)  # set_timesteps writes attributes: keep them off the shared scheduler
        scheduler.set_timesteps(num_inference_steps, device="cpu")
        timesteps = scheduler.timesteps.tolist()  # noisy -> clean, e.g. [999, 749, 499, 249]
        S = num_inference_steps
        guided_levels = timesteps[-guidance_steps:] if guidance_steps is not None else timesteps

        # 2. start a world (encode the start frame) or unpack the state
        if state is None:
            pixels = self.preprocess_image(image).to(device=device, dtype=self.vae.dtype)
            batch_size = pixels.shape[0]
            action_seq = self.prepare_actions(actions, batch_size)
            latent0 = self._normalize(self.vae.encode(pixels).latent_dist.mode()).to(dtype)
            if generator is None:
                generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"`generator` must be a torch.Generator, got {type(generator).__name__}.")
            rng = torch.Generator().manual_seed(0)
            rng.set_state(generator.get_state())
            _, vae_cache = self.vae.decode_stream(self._denormalize(latent0).to(self.vae.dtype))
            kv_cache = None
            window = latent0[:, :, :0]
            pending_latent, pending_action = latent0, torch.zeros_like(action_seq[:, 0])
            frame_index, num_priming = 0, S - 1
        else:
            batch_size = state.batch_size
            action_seq = self.prepare_actions(actions, batch_size)
            rng = torch.Generator().manual_seed(0)
            rng.set_state(state.generator_state)
            kv_cache, vae_cache, window = state.kv_cache, state.vae_cache, state.window.to(device)
            pending_latent, pending_action = state.pending_latent.to(device), state.pending_action
            frame_index, num_priming = state.frame_index, 0
        action_seq = action_seq.to(device=device, dtype=dtype)
        pending_action = pending_action.to(device=device, dtype=dtype)
        num_actions = action_seq.shape[1]
        latent_shape = (batch_size,) + tuple(pending_latent.shape[1:2]) + (1,) + tuple(pending_latent.shape[3:])
        if latents is not None:
            expected = (latent_shape[0], latent_shape[1], num_priming + num_actions, *latent_shape[3:])
            if tuple(latents.shape) != expected:
                raise ValueError(f"`latents` must have shape {expected} for this call, got {tuple(latents.shape)}.")

        # 3. shift-window denoising: one UNet call per step; after the priming calls, each emits one clean frame
        new_latents = []
        total = num_priming + num_actions
        # a bar for rollouts; none for the one-action steps of interactive play
        bar = self.progress_bar(total=total) if total > 1 else tqdm(total=total, disable=True)
        with bar as progress:
            for i in range(total):
                action = action_seq[:, max(i - num_priming, 0)]
                # 3a. a fresh noise frame enters the window at the highest noise level
                noise = self._draw_noise(latent_shape, rng, latents, i, dtype, device)
                window = torch.cat([window, noise], dim=2)
                n_win = window.shape[2]
                # window frame j (oldest first) has had (n_win - 1 - j) steps; in steady state n_win == S
                levels = [timesteps[n_win - 1 - j] for j in range(n_win)]
                has_pending = pending_latent is not None
                model_in = torch.cat([pending_latent, window], dim=2) if has_pending else window
                t = torch.tensor(([0] if has_pending else []) + levels, device=device).expand(batch_size, -1)
                frame_actions = action[:, None].expand(-1, n_win, -1)
                if has_pending:
                    frame_actions = torch.cat([pending_action[:, None], frame_actions], dim=1)
                # 3b. one model call: the pending clean frame enters the KV cache, every window frame moves one step
                # the window is oldest (least noisy) first: its frames on their last `guidance_steps` steps lead it
                num_guided = sum(level in guided_levels for level in levels)
                pred, kv_cache = self._predict(
                    model_in,
                    t,
                    frame_actions,
                    kv_cache,
                    int(has_pending),
                    guidance_scale if do_guidance else None,
                    num_guided,
                )
                stepped = [
                    scheduler.step(pred[:, :, j], levels[j], window[:, :, j], eta=0.0).prev_sample
                    for j in range(n_win)
                ]
                window = torch.stack(stepped, dim=2)
                # 3c. the oldest frame is clean after its S-th step: emit it
                if i >= num_priming:
                    pending_latent, pending_action = window[:, :, :1], action
                    window = window[:, :, 1:]
                    new_latents.append(pending_latent)
                    frame_index += 1
                else:
                    pending_latent = None  # the start frame is in the cache now; priming emits nothing
                if callback_on_step_end is not None:
                    callback_kwargs = {"latents": window}
                    callback_outputs = callback_on_step_end(self, i, levels[0], callback_kwargs)
                    window = callback_outputs.pop("latents", window)
                progress.update()

        new_latents = torch.cat(new_latents, dim=2)

        # 4. decode the new latent frames through the streaming VAE decoder
        if output_type == "latent":
            frames, vae_cache = new_latents, None
        else:
            if vae_cache is None:  # the stream was interrupted by latent-only calls: restart it at the last frame
                restart = state.pending_latent.to(device)
                _, vae_cache = self.vae.decode_stream(self._denormalize(restart).to(self.vae.dtype))
            video, vae_cache = self.vae.decode_stream(self._denormalize(new_latents).to(self.vae.dtype), vae_cache)
            frames = self.video_processor.postprocess_video(video.float().clamp(-1, 1), output_type=output_type)

        new_state = YanSimState(
            kv_cache=kv_cache,
            window=window,
            pending_latent=pending_latent,
            pending_action=pending_action,
            vae_cache=vae_cache,
            generator_state=rng.get_state(),
            frame_index=frame_index,
            num_inference_steps=S,
            fingerprint=self.fingerprint(),
        )
        self.maybe_free_model_hooks()
        if not return_dict:
            return frames, new_state
        return YanSimPipelineOutput(frames=frames, state=new_state)
