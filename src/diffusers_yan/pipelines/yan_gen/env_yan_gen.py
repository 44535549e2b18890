"""A gymnasium environment over :class:`YanGenPipeline`: play a generated world block by block, steer it with
actions, and change its text on the way (the seed's "text-guided expansion").

The environment holds one world's immutable :class:`YanGenState`; the pipeline stays shared and stateless, so many
environments (one per Space visitor, one per vectorised agent) can run on one pipeline. One ``step`` is one
pipeline call with ``state=``, which generates one block of ``num_frames_per_block`` latent frames under one
action and returns all of its video frames (``info["frames"]``): ``frames_per_step`` of them, 4 per latent frame
with Wan's VAE. ``set_prompt`` changes the text of the world from the next block on; frames already returned never
change.

Example:

```py
>>> from diffusers_yan import YanGenEnv, YanGenPipeline
>>> pipe = YanGenPipeline.from_pretrained("yan-gen-causal")  # `yan convert-wan --num-frames-per-block 3`, trained
>>> env = YanGenEnv(pipe, prompt="a dim stone corridor with torches", guidance_scale=1.0)
>>> obs, info = env.reset(seed=0, options={"image": "start.png"})  # image-to-video models take a start image
>>> obs, reward, terminated, truncated, info = env.step("MOVE_FORWARD")
>>> info["frames"].shape  # (frames_per_step, H, W, 3) uint8: the whole block; obs is its last frame
>>> env.set_prompt("the corridor opens into a flooded hall")
>>> obs, *_ = env.step("MOVE_FORWARD")  # this block and the next ones follow the new prompt
```
"""

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import PIL.Image
import torch
from gymnasium import spaces

from ..env_utils import encode_env_action, gym_action_space
from .pipeline_output import YanGenState
from .pipeline_yan_gen import YanGenPipeline


_RESET_OPTIONS = ("image", "prompt", "action")


def _check_prompt(prompt: Any, arg: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise ValueError(f"`{arg}` must be a string, got {type(prompt).__name__}.")
    return prompt


class YanGenEnv(gym.Env):
    """Gymnasium ``Env`` whose dynamics are a causal :class:`YanGenPipeline`.

    Args:
        pipeline: the (shared) pipeline. Its transformer must be causal (`num_frames_per_block` set): a
            bidirectional one makes whole clips and cannot be stepped.
        prompt: the text a world starts from when ``reset`` is given none (default ``""``).
        negative_prompt: what classifier-free guidance steers away from (only with ``guidance_scale > 1``).
        start_images: image-to-video models: images a world may start from; ``reset`` picks one with its seed.
            Defaults to the model folder's ``start_frames``. ``reset(options={"image": ...})`` starts from any
            other image. Text-to-video models start from the prompt alone and ignore these.
        height, width: the resolution of the worlds (default 480x832, Wan2.1's 480p); multiples of the VAE's
            spatial compression times the patch size (16 for Wan2.1).
        num_inference_steps: sampler steps per block (default 4: the few-step causal generator of Yan-Gen's
            Self-Forcing/DMD stage). Ignored when ``timesteps`` is given.
        timesteps: an explicit timestep list per block, e.g. ``[1000, 750, 500, 250]`` for a distilled model.
        guidance_scale: classifier-free guidance; 1.0 (default) turns it off, as distilled generators run; a value
            > 1 suits base models and costs a second transformer pass per step.
        max_sequence_length: text tokens per prompt (512 for umT5 in Wan2.1).
        max_episode_steps: ``truncated`` becomes True after this many steps (``None``: never).

    Observations are the newest frame, ``uint8 [H, W, 3]``. The action space is ``MultiBinary(num_buttons)`` (plus
    a ``Box`` for continuous axes when the model has any, as a ``Dict``); ``step`` also accepts anything
    :meth:`ActionSpace.encode` accepts, such as ``"MOVE_FORWARD+ATTACK"`` or ``["TURN_LEFT"]``. A model without an
    action branch has the one-element action space ``Discrete(1)`` and takes ``None`` (or 0): its world goes on
    under its prompt. The generator has no reward or termination of its own: ``reward`` is 0.0 and
    ``terminated`` is False. The env is not thread-safe: one call at a time (a pipeline is shared by many envs).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 16}  # Wan2.1 videos play at 16 frames/s

    def __init__(
        self,
        pipeline: YanGenPipeline,
        prompt: str = "",
        negative_prompt: str | None = None,
        start_images: Sequence[Any] | None = None,
        height: int = 480,
        width: int = 832,
        num_inference_steps: int = 4,
        timesteps: Sequence[float] | None = None,
        guidance_scale: float = 1.0,
        max_sequence_length: int = 512,
        max_episode_steps: int | None = None,
        render_mode: str | None = "rgb_array",
    ):
        if not isinstance(pipeline, YanGenPipeline):
            raise TypeError(f"`pipeline` must be a YanGenPipeline, got {type(pipeline).__name__}.")
        if not pipeline.is_causal:
            raise ValueError(
                "`pipeline` has a bidirectional transformer (`num_frames_per_block` is None): it makes whole clips and"
                " cannot be stepped. Use a causal checkpoint (`yan convert-wan --num-frames-per-block N`, then"
                " autoregressive post-training)."
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"`render_mode` must be None or 'rgb_array', got {render_mode!r}.")
        multiple = pipeline.vae_scale_factor_spatial * pipeline.transformer.config.patch_size[1]
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % multiple != 0:
                raise ValueError(f"`{name}` must be a positive multiple of {multiple} for this model, got {value!r}.")
        if negative_prompt is not None:
            _check_prompt(negative_prompt, arg="negative_prompt")
        self.pipeline = pipeline
        self.prompt = _check_prompt(prompt)
        self.negative_prompt = negative_prompt
        self.start_images = list(start_images) if start_images is not None else list(pipeline.start_frames)
        self.height, self.width = height, width
        self.num_inference_steps = num_inference_steps
        self.timesteps = None if timesteps is None else list(timesteps)
        self.guidance_scale = guidance_scale
        self.max_sequence_length = max_sequence_length
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode

        self.observation_space = spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)
        space = pipeline.action_space
        self.action_space = spaces.Discrete(1) if space is None else gym_action_space(space)
        self.state: YanGenState | None = None
        self._prompt_changed = False  # set_prompt was called since the last block: the next block re-encodes it
        self._last_frame: np.ndarray | None = None
        self._steps = 0

    # ------------------------------------------------------------------ properties
    @property
    def frames_per_step(self) -> int:
        """Video frames of one ``step``: a block of latent frames, each decoded to ``vae_scale_factor_temporal``."""
        return self.pipeline.vae_scale_factor_temporal * self.pipeline.transformer.config.num_frames_per_block

    @property
    def takes_image(self) -> bool:
        """Whether worlds start from an image (image-to-video models) or from the prompt alone."""
        return self.pipeline.is_image_to_video

    # ------------------------------------------------------------------ helpers
    def _actions(self, action) -> list | None:
        """One action for one block, as the pipeline's `actions=` (a sequence of one), or None without actions."""
        space = self.pipeline.action_space
        if space is None:
            if action is None or (isinstance(action, (int, np.integer)) and int(action) == 0):
                return None
            raise ValueError(
                f"`action` must be None: this model has no action branch (got {action!r}); steer it with"
                " `set_prompt` instead."
            )
        return [encode_env_action(space, "NOOP" if action is None else action)]

    def _start_image(self, image):
        if isinstance(image, str):
            with PIL.Image.open(image) as opened:
                image = opened.convert("RGB")
        if isinstance(image, PIL.Image.Image):
            # center-crop to the world's aspect ratio instead of stretching (as YanSimPipeline does)
            image = self.pipeline.video_processor.resize(
                image.convert("RGB"), self.height, self.width, resize_mode="crop"
            )
        return image

    def _observation(self, frames: np.ndarray) -> tuple[np.ndarray, dict]:
        frames = (frames[0] * 255).round().astype(np.uint8)
        self._last_frame = frames[-1]
        info = {"frames": frames, "frame_index": self.state.frame_index, "prompt": self.prompt}
        return self._last_frame, info

    # ------------------------------------------------------------------ gym API
    def set_prompt(self, prompt: str) -> None:
        """Change the world's text: the next ``step`` (the next block) and every later one follow ``prompt``; frames
        already returned never change. Before a world exists, it is the prompt the next ``reset`` starts from."""
        self.prompt = _check_prompt(prompt)
        self._prompt_changed = self.state is not None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start a new world. ``options``: ``"prompt"`` (default: the env's prompt), ``"image"`` (image-to-video
        models; a PIL image, an array, a tensor or a path; default: one of ``start_images`` picked with the seed)
        and ``"action"`` (the action of the first block; default NOOP)."""
        super().reset(seed=seed)
        options = options or {}
        if not isinstance(options, dict):
            raise ValueError(f"`options` must be a dict with keys {_RESET_OPTIONS}, got {type(options).__name__}.")
        unknown = sorted(set(options) - set(_RESET_OPTIONS))
        if unknown:
            raise ValueError(f"`options` has unknown keys {unknown}; expected some of {_RESET_OPTIONS}.")
        prompt = _check_prompt(options.get("prompt", self.prompt), arg="options['prompt']")
        image = options.get("image")
        if self.takes_image:
            if image is None:
                if not self.start_images:
                    raise ValueError(
                        "No start image: this model is image-to-video; pass `start_images=` to YanGenEnv or"
                        " `options={'image': ...}` to reset()."
                    )
                image = self.start_images[int(self.np_random.integers(len(self.start_images)))]
            image = self._start_image(image)
        elif image is not None:
            raise ValueError(
                "`options['image']` was given but this model is text-to-video: its worlds start from the prompt."
            )
        actions = self._actions(options.get("action"))
        # a new world's first block: 1 video frame for its first latent frame, then 4 for each later one (Wan's VAE)
        first_block_frames = 1 + self.frames_per_step - self.pipeline.vae_scale_factor_temporal
        generator = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        out = self.pipeline(
            prompt=prompt,
            negative_prompt=self.negative_prompt,
            image=image,
            actions=actions,
            height=self.height,
            width=self.width,
            num_frames=first_block_frames,
            num_inference_steps=None if self.timesteps is not None else self.num_inference_steps,
            timesteps=self.timesteps,
            guidance_scale=self.guidance_scale,
            generator=generator,
            max_sequence_length=self.max_sequence_length,
            output_type="np",
        )
        self.state = out.state
        self.prompt = prompt
        self._prompt_changed = False
        self._steps = 0
        return self._observation(out.frames)

    def step(self, action):
        if self.state is None:
            raise RuntimeError("Call reset() before step().")
        actions = self._actions(action)
        prompt = self.prompt if self._prompt_changed else None  # None: the world keeps its text states
        out = self.pipeline(
            state=self.state,
            prompt=prompt,
            negative_prompt=self.negative_prompt if prompt is not None else None,
            actions=actions,
            max_sequence_length=self.max_sequence_length,
            output_type="np",
        )
        self.state = out.state
        self._prompt_changed = False
        self._steps += 1
        obs, info = self._observation(out.frames)
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        return obs, 0.0, False, truncated, info

    def render(self):
        return self._last_frame
