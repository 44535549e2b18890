"""Frame and video metrics for world-model evaluation, as small pure functions.

Every function takes frames as float tensors ``[N, 3, H, W]`` in [0, 1] (one row per compared frame) and returns
one value per frame, so that callers aggregate them as they like (:func:`summarize`).

- PSNR and SSIM come from ``torchmetrics.functional`` and always run.
- LPIPS needs torchvision and its backbone weights in the local torch hub cache; FVD needs an I3D TorchScript
  detector file. Both are *detected, never downloaded*: :func:`load_lpips` and :func:`load_fvd_detector` return
  ``(None, note)`` when they are missing, and the note goes into the evaluation JSON.

Example:

```py
>>> import torch
>>> from diffusers_yan.evaluation.metrics import frame_psnr, frame_ssim, summarize
>>> a = torch.rand(4, 3, 48, 64)
>>> frame_psnr(a, a)  # identical frames: capped at PSNR_CAP_DB
tensor([100., 100., 100., 100.])
>>> bool(torch.allclose(frame_ssim(a, a), torch.ones(4)))
True
>>> summarize(torch.tensor([1.0, 3.0]))
{'mean': 2.0, 'std': 1.0, 'count': 2}
```
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Callable

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


logger = logging.getLogger(__name__)

# Identical frames have an infinite PSNR. We cap it (as many video benchmarks do) so that means stay finite;
# 100 dB is an MSE of 1e-10 on [0, 1] frames, far above anything an 8-bit frame pair that differs can reach
# (one pixel off by one level in a 64x48 frame is already ~80 dB).
PSNR_CAP_DB = 100.0

# torchvision backbone checkpoints LPIPS loads from the torch hub cache (file names of torchvision's weights)
LPIPS_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
# the I3D detector used by the common FVD implementations (StyleGAN-V's ``i3d_torchscript.pt``)
FVD_DETECTOR_FILE = "i3d_torchscript.pt"
# I3D's temporal receptive field: shorter clips give meaningless features
FVD_MIN_FRAMES = 10


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"`pred` {tuple(pred.shape)} and `target` {tuple(target.shape)} must have the same shape.")
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"frames must be [N, 3, H, W], got {tuple(pred.shape)}.")


def frame_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per frame, ``[N]``, for frames in [0, 1]; identical frames give :data:`PSNR_CAP_DB`."""
    _check_pair(pred, target)
    psnr = peak_signal_noise_ratio(pred.float(), target.float(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    return psnr.nan_to_num(posinf=PSNR_CAP_DB).clamp(max=PSNR_CAP_DB)


def _ssim_kernel_size(height: int, width: int) -> int:
    # the standard 11-px Gaussian window, shrunk (odd) for frames smaller than it
    side = min(11, height, width)
    return side if side % 2 == 1 else side - 1


def frame_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per frame, ``[N]`` (Gaussian 11-px window, sigma 1.5, Wang et al. 2004), for frames in [0, 1]."""
    _check_pair(pred, target)
    k = _ssim_kernel_size(*pred.shape[-2:])
    return structural_similarity_index_measure(
        pred.float(), target.float(), data_range=1.0, kernel_size=k, reduction="none"
    )


def copy_last_frames(last: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The copy-last-frame baseline: ``last`` ``[3, H, W]`` repeated ``num_frames`` times, ``[num_frames, 3, H, W]``.

    It is the prediction of a world model that never moves; a model worth playing must beat it.
    """
    if last.ndim != 3:
        raise ValueError(f"`last` must be one frame [3, H, W], got {tuple(last.shape)}.")
    return last.unsqueeze(0).expand(num_frames, -1, -1, -1)


def summarize(values) -> dict:
    """``{"mean", "std", "count"}`` of a 1-D collection of per-frame values (std is the population std)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        return {"mean": None, "std": None, "count": 0}
    return {"mean": float(v.mean()), "std": float(v.std(unbiased=False)), "count": int(v.numel())}


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, D]`` (Heusel et al. 2017, eq. 2).

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; the trace of the matrix square root is the sum of the
    square roots of the eigenvalues of ``S_a S_b`` (real and non-negative up to round-off).
    """
    a, b = feats_a.double(), feats_b.double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be [N, D] with the same D, got {tuple(a.shape)} and {tuple(b.shape)}.")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("the Fréchet distance needs at least 2 samples on each side.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eig = torch.linalg.eigvals(cov_a @ cov_b)
    sqrt_trace = eig.real.clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * sqrt_trace)


# ---------------------------------------------------------------------------------------------- optional metrics
def _hub_checkpoint(name: str) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def load_lpips(net_type: str = "alex") -> tuple[Callable | None, str]:
    """LPIPS per frame (lower is better) if torchvision and the backbone weights are present locally.

    Returns ``(fn, note)``; ``fn(pred, target) -> [N]`` for frames in [0, 1], or ``None`` with the reason in
    ``note``. Nothing is downloaded: the backbone checkpoint must already be in the torch hub cache.
    """
    if net_type not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"`net_type` must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net_type!r}.")
    if importlib.util.find_spec("torchvision") is None:
        return None, "LPIPS skipped: torchvision is not installed (torchmetrics' LPIPS needs its backbones)."
    weights = _hub_checkpoint(LPIPS_BACKBONE_FILES[net_type])
    if not os.path.isfile(weights):
        return (
            None,
            f"LPIPS skipped: the {net_type} backbone weights are not in the local torch hub cache ({weights}).",
        )
    try:
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        net = _NoTrainLpips(net=net_type, pretrained=True).eval()
    except Exception as e:  # a broken install: report it rather than fail the whole evaluation
        return None, f"LPIPS skipped: it failed to load ({type(e).__name__}: {e})."

    @torch.no_grad()
    def lpips(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(pred, target)
        return net(pred.float(), target.float(), normalize=True).flatten()

    return lpips, f"LPIPS ({net_type}) from torchmetrics, backbone weights {weights}."


def load_fvd_detector(path: str | None = None) -> tuple[Callable | None, str]:
    """The I3D feature extractor for FVD (Unterthiner et al. 2018) if its TorchScript file is present locally.

    ``path`` (or ``$YAN_FVD_DETECTOR``, or ``<torch hub cache>/checkpoints/i3d_torchscript.pt``) is the I3D
    TorchScript file of StyleGAN-V / the common FVD implementations. Returns ``(features, note)`` with
    ``features(videos) -> [N, D]`` for videos ``[N, T, 3, H, W]`` in [0, 1], or ``None`` and the reason.
    """
    path = path or os.environ.get("YAN_FVD_DETECTOR") or _hub_checkpoint(FVD_DETECTOR_FILE)
    if not os.path.isfile(path):
        return None, f"FVD skipped: no I3D detector file at {path} (pass --fvd-detector or set $YAN_FVD_DETECTOR)."
    try:
        detector = torch.jit.load(path, map_location="cpu").eval()
    except Exception as e:
        return None, f"FVD skipped: the I3D detector at {path} failed to load ({type(e).__name__}: {e})."

    @torch.no_grad()
    def features(videos: torch.Tensor) -> torch.Tensor:
        if videos.ndim != 5 or videos.shape[2] != 3:
            raise ValueError(f"videos must be [N, T, 3, H, W], got {tuple(videos.shape)}.")
        # the detector takes [N, 3, T, H, W] in [-1, 1] and resizes to 224 itself
        x = videos.float().permute(0, 2, 1, 3, 4) * 2 - 1
        return detector(x, rescale=False, resize=True, return_features=True).double()

    return features, f"FVD with the I3D detector {path}."
