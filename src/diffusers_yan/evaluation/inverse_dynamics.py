"""YanInverseDynamicsModel: the playability probe p(a_n | o_n, o_{n+1}) (seed slides, "A Note on Evaluation").

A small CNN reads two consecutive frames and predicts which buttons were held between them (multi-label,
one logit per button, trained with binary cross-entropy on real engine frames by
``training_examples/train_inverse_dynamics.py``). Run on a world model's frames, its accuracy says whether the
frames respond to the actions that were fed: a model that ignores actions gets the accuracy of guessing.

Continuous axes of an action space are not predicted (the probe is over buttons only).

Example:

```py
>>> import torch
>>> from diffusers_yan.evaluation import YanInverseDynamicsModel, idm_accuracy
>>> idm = YanInverseDynamicsModel(action_space=None, block_out_channels=(8, 16))  # None: the Doom buttons
>>> before, after = torch.rand(2, 4, 3, 48, 64) * 2 - 1  # frames in [-1, 1]
>>> idm(before, after).shape  # one logit per button
torch.Size([4, 8])
>>> labels = torch.zeros(4, 8)
>>> acc = idm_accuracy(idm.predict(before, after), labels)
>>> sorted(acc)
['exact_match', 'num_pairs', 'per_button', 'per_button_mean', 'per_button_rates']
```
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..actions import ActionSpace


def button_labels(actions: torch.Tensor, action_space: ActionSpace) -> torch.Tensor:
    """Encoded actions ``[..., action_dim]`` -> the 0/1 button part ``[..., num_buttons]`` (axes dropped)."""
    if actions.shape[-1] != action_space.dim:
        raise ValueError(f"`actions` must end in the action dim {action_space.dim}, got {tuple(actions.shape)}.")
    return (actions[..., : len(action_space.buttons)] > 0.5).float()


def idm_accuracy(pred: torch.Tensor, labels: torch.Tensor, button_names=None) -> dict:
    """Exact-match and per-button accuracy of 0/1 button predictions ``[N, K]`` against labels ``[N, K]``.

    ``exact_match`` counts a pair right only when every button is right (the strict figure: most buttons are
    released most of the time, so per-button accuracy is high even for a probe that always says "nothing").
    ``per_button_rates`` says how the errors split: per button, how often it was held in the labels (``held``), the
    fraction of those pairs the probe called held (``hit_rate``) and the fraction of the other pairs it called held
    (``false_alarm_rate``); ``None`` where there is nothing to count.
    """
    if pred.shape != labels.shape or pred.ndim != 2:
        raise ValueError(f"`pred` {tuple(pred.shape)} and `labels` {tuple(labels.shape)} must be equal [N, K].")
    if pred.shape[0] == 0:
        return {"exact_match": None, "per_button_mean": None, "per_button": {}, "per_button_rates": {}, "num_pairs": 0}
    correct = pred.bool() == labels.bool()
    per_button = correct.float().mean(0)
    names = list(button_names) if button_names is not None else [str(i) for i in range(pred.shape[1])]
    held, said = labels.bool(), pred.bool()

    def rate(num: torch.Tensor, den: torch.Tensor):
        return float(num) / float(den) if den > 0 else None

    rates = {
        n: {
            "held": rate(held[:, k].sum(), held.shape[0]),
            "hit_rate": rate((said[:, k] & held[:, k]).sum(), held[:, k].sum()),
            "false_alarm_rate": rate((said[:, k] & ~held[:, k]).sum(), (~held[:, k]).sum()),
        }
        for k, n in enumerate(names)
    }
    return {
        "exact_match": float(correct.all(1).float().mean()),
        "per_button_mean": float(per_button.mean()),
        "per_button": {n: float(v) for n, v in zip(names, per_button)},
        "per_button_rates": rates,
        "num_pairs": int(pred.shape[0]),
    }


def majority_accuracy(labels: torch.Tensor) -> float:
    """Exact-match accuracy of always guessing the most frequent button combination (the probe's floor)."""
    if labels.shape[0] == 0:
        return float("nan")
    _, counts = torch.unique(labels.bool(), dim=0, return_counts=True)
    return float(counts.max() / labels.shape[0])


class YanInverseDynamicsModel(ModelMixin, ConfigMixin):
    r"""
    Inverse-dynamics probe: two frames in, one logit per button out.

    Args:
        action_space (`dict`, *optional*): the action space (:meth:`ActionSpace.to_dict`); ``None`` is the Doom one.
            One output per button.
        in_channels (`int`, defaults to 3): channels of one frame.
        block_out_channels (`tuple[int]`, defaults to ``(32, 64, 96, 128)``): width of each stride-2 conv stage.
        norm_num_groups (`int`, defaults to 8): GroupNorm groups.
        pool_size (`tuple[int, int]`, defaults to ``(3, 4)``): the feature map is average-pooled to this grid before
            the head, so any input resolution works while left/right and near/far stay distinguishable.
        sample_size (`tuple[int, int]`, *optional*): ``(height, width)`` of the frames it was trained on; inputs of
            another size are resized to it (bilinear) by :meth:`predict`.
    """

    @register_to_config
    def __init__(
        self,
        action_space: dict | None = None,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 96, 128),
        norm_num_groups: int = 8,
        pool_size: tuple[int, int] = (3, 4),
        sample_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        space = ActionSpace.from_dict(action_space)
        if len(space.buttons) == 0:
            raise ValueError("`action_space` has no buttons: the inverse-dynamics probe predicts buttons.")
        if not block_out_channels or any(c % norm_num_groups for c in block_out_channels):
            raise ValueError(
                f"`block_out_channels` {block_out_channels} must be non-empty multiples of `norm_num_groups`"
                f" ({norm_num_groups})."
            )
        self.action_space = space
        # 1. input: before, after and their difference (the difference is most of the signal for a small network)
        layers, c_in = [], 3 * in_channels
        # 2. stride-2 conv stages
        for c in block_out_channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(norm_num_groups, c), nn.SiLU()]
            c_in = c
        self.encoder = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(tuple(pool_size))
        # 3. head: one logit per button
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * pool_size[0] * pool_size[1], 256),
            nn.SiLU(),
            nn.Linear(256, len(space.buttons)),
        )

    @property
    def button_names(self) -> tuple[str, ...]:
        return self.action_space.buttons

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, C, H, W]`` in [-1, 1] (``before`` then ``after``) -> logits ``[B, num_buttons]``."""
        if before.shape != after.shape or before.ndim != 4:
            raise ValueError(
                f"`before` {tuple(before.shape)} and `after` {tuple(after.shape)} must be equal [B, C, H, W]."
            )
        # 1. input
        x = torch.cat([before, after, after - before], dim=1).to(self.dtype)
        # 2. conv stages
        x = self.pool(self.encoder(x))
        # 3. head
        return self.head(x)

    @torch.no_grad()
    def predict(self, before: torch.Tensor, after: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """0/1 button predictions ``[B, num_buttons]`` for frames in [-1, 1] (resized to ``sample_size`` if set)."""
        size = self.config.sample_size
        if size is not None and tuple(before.shape[-2:]) != tuple(size):
            before = F.interpolate(before.float(), size=tuple(size), mode="bilinear", align_corners=False)
            after = F.interpolate(after.float(), size=tuple(size), mode="bilinear", align_corners=False)
        return (torch.sigmoid(self(before.to(self.device), after.to(self.device)).float()) > threshold).float().cpu()
