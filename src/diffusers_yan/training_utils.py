"""Small pieces shared by the training scripts in ``training_examples/`` (as ``diffusers.training_utils`` is).

Checkpoints are written atomically: ``accelerator.save_state`` writes into a temporary folder that is renamed to
``checkpoint-<step>`` only once complete, so a kill at any moment leaves either the old set of checkpoints or the
new one, never a half-written folder that ``--resume_from_checkpoint latest`` would pick up.
"""

import logging
import os
import re
import shutil

import torch


logger = logging.getLogger(__name__)

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in ``output_dir`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = _CKPT_RE.match(name)
        if m and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(m.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def resolve_resume_path(output_dir: str, resume_from_checkpoint: str | None) -> str | None:
    """``"latest"`` -> the newest complete checkpoint (or ``None`` if there is none); a path -> that path."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1][1] if ckpts else None
    if not os.path.isdir(resume_from_checkpoint):
        raise ValueError(f"`--resume_from_checkpoint` {resume_from_checkpoint!r} is not a checkpoint folder.")
    return resume_from_checkpoint


def checkpoint_step(path: str) -> int:
    m = _CKPT_RE.match(os.path.basename(os.path.normpath(path)))
    if not m:
        raise ValueError(f"Checkpoint folder {path!r} is not named checkpoint-<step>.")
    return int(m.group(1))


def save_checkpoint(accelerator, output_dir: str, step: int, total_limit: int | None = None) -> str:
    """Atomically save the full training state (models, optimizer, scheduler, RNG, registered objects)."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = os.path.join(output_dir, f".tmp-checkpoint-{step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit is not None and total_limit > 0:
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info(f"saved checkpoint {final}")
    accelerator.wait_for_everyone()
    return final


def parse_int_tuple(text: str, arg: str) -> tuple[int, ...]:
    """``"64,128"`` -> ``(64, 128)`` with an error naming the flag."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"`{arg}` must be comma-separated integers, got {text!r}.") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"`{arg}` must be positive integers, got {text!r}.")
    return values


def parse_resolution(text: str, arg: str = "--resolution") -> tuple[int, int]:
    """``"96x64"`` (width x height) -> ``(height, width)``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"`{arg}` must look like WIDTHxHEIGHT (e.g. 96x64), got {text!r}.")
    return int(m.group(2)), int(m.group(1))


def diffusion_forcing_timesteps(
    batch_size: int,
    num_frames: int,
    num_train_timesteps: int,
    inference_timesteps: list[int],
    p_inference_pattern: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-frame noise levels for Diffusion Forcing training, ``[batch_size, num_frames]`` (integers).

    Diffusion Forcing (Chen et al. 2024, Alg. 1): every frame of a clip gets an *independent* noise level
    ``k_t ~ U{0, ..., K}``. With probability ``p_inference_pattern`` a clip instead gets the pattern the shift-window
    sampler produces at inference: a clean prefix (``t = 0``, the past) followed by a window of staggered levels
    taken from ``inference_timesteps`` (oldest frame least noisy), so the exact patterns seen at test time are also
    seen in training.
    """
    t = torch.randint(0, num_train_timesteps, (batch_size, num_frames), generator=generator)
    window = len(inference_timesteps)
    ladder = torch.tensor(sorted(inference_timesteps))  # least noisy first
    for b in range(batch_size):
        if torch.rand((), generator=generator).item() >= p_inference_pattern:
            continue
        n_clean = int(torch.randint(1, num_frames, (), generator=generator).item())
        row = torch.zeros(num_frames, dtype=torch.long)
        stagger = ladder[: max(num_frames - n_clean, 0)]
        row[n_clean : n_clean + len(stagger)] = stagger[: num_frames - n_clean]
        if num_frames - n_clean > window:  # frames past the window are pure noise at inference time
            row[n_clean + window :] = num_train_timesteps - 1
        t[b] = row
    return t


def load_clip_datasets(
    dataset_dirs: str,
    clip_length: int,
    with_depth: bool = False,
    arg: str = "--dataset_dir",
    stride: int | None = None,
    what: str | None = None,
):
    """One or more (comma-separated) `yan collect` folders as a single clip dataset with an ``action_space``.

    All folders must share one action space (the model learns one set of buttons). ``stride`` is the step between
    clip starts (default: ``clip_length``, non-overlapping clips); ``what`` names a clip in the empty-data error.
    """
    from diffusers_yan.data import GameplayClipDataset

    paths = [p.strip() for p in str(dataset_dirs).split(",") if p.strip()]
    if not paths:
        raise ValueError(f"`{arg}` is empty.")
    parts = []
    for path in paths:
        if not os.path.isdir(path):
            raise ValueError(f"`{arg}`: {path!r} is not a folder (expected a dataset written by `yan collect`).")
        parts.append(GameplayClipDataset(path, clip_length=clip_length, stride=stride, with_depth=with_depth))
    if any(p.action_space != parts[0].action_space for p in parts):
        raise ValueError(
            f"`{arg}`: the datasets have different action spaces {[p.action_space.buttons for p in parts]}."
        )
    dataset = torch.utils.data.ConcatDataset(parts)
    dataset.action_space = parts[0].action_space
    if len(dataset) == 0:
        raise ValueError(f"`{arg}`: {paths} hold no {what or f'clip of {clip_length} frames'}.")
    return dataset


def push_output_to_hub(output_dir: str, repo_id: str, token: str | None = None) -> None:
    """Upload a finished output folder (model files and card) to the Hub, leaving checkpoints and logs behind."""
    from huggingface_hub import create_repo, upload_folder

    create_repo(repo_id, exist_ok=True, token=token)
    upload_folder(
        repo_id=repo_id, folder_path=output_dir, token=token, ignore_patterns=["checkpoint-*", ".tmp-*", "logs/*"]
    )
