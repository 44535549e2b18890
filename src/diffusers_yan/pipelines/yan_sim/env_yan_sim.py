"""A gymnasium environment over :class:`YanSimPipeline`: play (or train an agent) inside the simulated world.

The environment holds one world's :class:`YanSimState`; the pipeline stays shared and stateless, so many
environments (one per Space visitor, one per vectorised agent) can run on one pipeline.

Example:

```py
>>> from diffusers_yan import BUNDLED_MODELS, YanSimEnv, YanSimPipeline
>>> pipe = YanSimPipeline.from_pretrained(BUNDLED_MODELS["yan-sim-doom"])
>>> env = YanSimEnv(pipe)
>>> obs, info = env.reset(seed=0)
>>> obs, reward, terminated, truncated, info = env.step(["MOVE_FORWARD"])
>>> obs.shape  # (H, W, 3) uint8, the newest frame
```
"""

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import PIL.Image
import torch
from gymnasium import spaces

from ..env_utils import encode_env_action, gym_action_space
from .pipeline_output import YanSimState
from .pipeline_yan_sim import YanSimPipeline


class YanSimEnv(gym.Env):
    """Gymnasium ``Env`` whose dynamics are a :class:`YanSimPipeline`.

    Args:
        pipeline: the (shared) simulator pipeline.
        start_images: images a world may start from; ``reset`` picks one with its seed. Defaults to the model
            folder's ``start_frames``. ``reset(options={"image": ...})`` starts from any other image.
        num_inference_steps: DDIM steps (= shift-window length) per frame.
        max_episode_steps: ``truncated`` becomes True after this many steps (``None``: never).

    Observations are the newest frame, ``uint8 [H, W, 3]``. The action space is ``MultiBinary(num_buttons)``
    (plus a ``Box`` for continuous axes when the model has any, as a ``Dict``); ``step`` also accepts anything
    :meth:`ActionSpace.encode` accepts, such as ``"MOVE_FORWARD+ATTACK"`` or ``["TURN_LEFT"]``. The simulator has
    no reward or termination of its own: ``reward`` is 0.0 and ``terminated`` is False; ``info["frames"]`` holds
    all ``frames_per_action`` frames of the step.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        pipeline: YanSimPipeline,
        start_images: Sequence[Any] | None = None,
        num_inference_steps: int = 4,
        max_episode_steps: int | None = None,
        render_mode: str | None = "rgb_array",
    ):
        if not isinstance(pipeline, YanSimPipeline):
            raise TypeError(f"`pipeline` must be a YanSimPipeline, got {type(pipeline).__name__}.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"`render_mode` must be None or 'rgb_array', got {render_mode!r}.")
        self.pipeline = pipeline
        self.start_images = list(start_images) if start_images is not None else list(pipeline.start_frames)
        self.num_inference_steps = num_inference_steps
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        height, width = pipeline.resolution
        self.observation_space = spaces.Box(0, 255, (height, width, 3), dtype=np.uint8)
        self.action_space = gym_action_space(pipeline.action_space)
        self.state: YanSimState | None = None
        self._last_frame: np.ndarray | None = None
        self._steps = 0

    def _encode(self, action) -> torch.Tensor:
        return encode_env_action(self.pipeline.action_space, action)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        image = options.get("image")
        if image is None:
            if not self.start_images:
                raise ValueError(
                    "No start image: pass `start_images=` to YanSimEnv or `options={'image': ...}` to reset()."
                )
            image = self.start_images[int(self.np_random.integers(len(self.start_images)))]
        if isinstance(image, str):
            image = PIL.Image.open(image)
        first_action = options.get("action", "NOOP")
        generator = torch.Generator().manual_seed(int(self.np_random.integers(2**62)))
        out = self.pipeline(
            image=image,
            actions=[self._encode(first_action)],
            num_inference_steps=self.num_inference_steps,
            generator=generator,
            output_type="np",
        )
        self.state = out.state
        self._steps = 0
        frames = (out.frames[0] * 255).round().astype(np.uint8)
        self._last_frame = frames[-1]
        return self._last_frame, {"frames": frames, "frame_index": self.state.frame_index}

    def step(self, action):
        if self.state is None:
            raise RuntimeError("Call reset() before step().")
        out = self.pipeline(
            state=self.state,
            actions=[self._encode(action)],
            num_inference_steps=self.num_inference_steps,
            output_type="np",
        )
        self.state = out.state
        self._steps += 1
        frames = (out.frames[0] * 255).round().astype(np.uint8)
        self._last_frame = frames[-1]
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        return self._last_frame, 0.0, False, truncated, {"frames": frames, "frame_index": self.state.frame_index}

    def render(self):
        return self._last_frame
