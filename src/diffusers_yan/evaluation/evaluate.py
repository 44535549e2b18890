"""World-model evaluation against the game engine: PSNR/SSIM per horizon, copy-last baseline, playability probe.

The protocol (seed slides, "A Note on Evaluation"; issue #4):

- A *window* is ``1 + H r`` consecutive real frames of one played episode (``H`` the longest horizon, ``r`` the
  model's ``frames_per_action``), with the actions the engine received. Window frame 0 is the start; model step
  ``k`` (``1 <= k <= H``) covers window frames ``1 + (k-1) r ... k r`` and is fed the action that led into the
  first of them (the convention of ``train_yan_sim.latent_actions``).
- Horizon ``h`` (in actions = model steps) compares the ``r`` frames produced at step ``h`` with those real frames.
- Horizon 1 is *teacher-forced*: every step ``k`` of every window is predicted on its own from the real frame just
  before it (window frame ``(k-1) r``), so its figure averages ``H`` one-step predictions per window. Horizons
  above 1 are *autoregressive*: one rollout of ``H`` steps from window frame 0, read off at each horizon.
- Beside every figure, the copy-last-frame baseline: the real frame the prediction started from, copied forward and
  compared with the same target frames.
- Playability (with an inverse-dynamics model): one pair per step, ``(last frame before the step, first frame of the
  step)``, labelled with the step's action. That action is exactly the one that led from the first to the second
  frame of the pair in the engine (later frames of a step may have been played with other actions, which the model
  never saw), so real pairs carry exact labels. The probe is run on real pairs, on rollout pairs (both frames
  generated, except the real start before step 1) and on teacher-forced pairs (real frame before, generated frame
  after), same windows, same actions.

Example (a real model and a `yan collect` folder):

```py
>>> from diffusers_yan import YanSimPipeline
>>> from diffusers_yan.evaluation import evaluate_windows, load_eval_windows
>>> pipe = YanSimPipeline.from_pretrained("path/to/model")
>>> windows, info = load_eval_windows("data/doom_heldout", max_horizon=8, frames_per_action=pipe.frames_per_action)
>>> results = evaluate_windows(pipe, windows, horizons=(1, 8))
>>> results["horizons"]["8"]["psnr"]["model"]["mean"], results["horizons"]["8"]["psnr"]["copy_last"]["mean"]
```
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..actions import ActionSpace
from .inverse_dynamics import button_labels, idm_accuracy, majority_accuracy
from .metrics import FVD_MIN_FRAMES, copy_last_frames, frame_psnr, frame_ssim, frechet_distance, summarize


logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- bookkeeping maths
def parse_horizons(text, arg: str = "--horizons") -> tuple[int, ...]:
    """``"1,8,32"`` (or a sequence of ints) -> sorted unique ``(1, 8, 32)``, with an error naming ``arg``."""
    try:
        items = text.split(",") if isinstance(text, str) else list(text)
        values = sorted({int(v) for v in items if str(v).strip()})
    except (TypeError, ValueError):
        raise ValueError(f"`{arg}` must be comma-separated integers such as 1,8,32, got {text!r}.") from None
    if not values or values[0] < 1:
        raise ValueError(f"`{arg}` must be positive integers (actions ahead), got {text!r}.")
    return tuple(values)


def window_length(max_horizon: int, frames_per_action: int) -> int:
    """Real frames a window needs: the start frame plus ``frames_per_action`` per step."""
    return 1 + max_horizon * frames_per_action


def step_frames(step: int, frames_per_action: int) -> slice:
    """Window frames produced by model step ``step`` (1-based): ``1 + (step-1) r ... step r``."""
    if step < 1:
        raise ValueError(f"`step` is 1-based, got {step}.")
    return slice(1 + (step - 1) * frames_per_action, 1 + step * frames_per_action)


def step_actions(actions: torch.Tensor, frames_per_action: int, num_steps: int) -> torch.Tensor:
    """Per-video-frame actions ``[L, A]`` (row i led to frame i) -> one action per step ``[num_steps, A]``.

    Step ``k`` takes the action that led into its first frame, window row ``1 + (k-1) r``.
    """
    rows = [step_frames(k, frames_per_action).start for k in range(1, num_steps + 1)]
    if rows and rows[-1] >= actions.shape[0]:
        raise ValueError(f"{num_steps} steps need {rows[-1] + 1} action rows, got {actions.shape[0]}.")
    return actions[rows]


def teacher_forced_starts(num_steps: int, frames_per_action: int) -> list[int]:
    """Window frame each teacher-forced step starts from: the real frame just before it, ``(k-1) r``."""
    return [step_frames(k, frames_per_action).start - 1 for k in range(1, num_steps + 1)]


def check_action_spaces(model_space: ActionSpace, data_space: ActionSpace, arg: str = "--data") -> None:
    """The model must know exactly the data's buttons and axes, in the same order (key bindings may differ)."""
    if tuple(model_space.names) != tuple(data_space.names):
        raise ValueError(
            f"`{arg}`: the data's action space {list(data_space.names)} differs from the model's"
            f" {list(model_space.names)}; evaluate on data played with the model's buttons."
        )


# ---------------------------------------------------------------------------------------------- windows from data
@dataclass
class EvalWindow:
    """``frames`` ``[L, 3, H, W]`` in [0, 1] and ``actions`` ``[L, A]`` (row i led to frame i) of one episode."""

    frames: torch.Tensor
    actions: torch.Tensor
    episode_id: int = 0
    start_index: int = 0


def _runs(episode_ids: np.ndarray, segment_ids: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` row ranges of consecutive rows of one (episode, segment): frames with no gap between them."""
    if len(episode_ids) == 0:
        return []
    change = np.flatnonzero((np.diff(episode_ids) != 0) | (np.diff(segment_ids) != 0)) + 1
    bounds = np.concatenate([[0], change, [len(episode_ids)]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def select_starts(
    candidates: list[int], episode_ids: np.ndarray, episodes: int | None, starts_per_episode: int, seed: int
) -> list[int]:
    """Pick window starts among ``candidates`` (dataset rows where a full window fits): ``starts_per_episode`` per
    episode (drawn without replacement with ``seed``, then sorted), from the first ``episodes`` episodes by id."""
    by_episode: dict[int, list[int]] = {}
    for c in candidates:
        by_episode.setdefault(int(episode_ids[c]), []).append(int(c))
    chosen = sorted(by_episode)[:episodes] if episodes is not None else sorted(by_episode)
    rng = np.random.default_rng(seed)
    starts = []
    for e in chosen:
        cands = by_episode[e]
        k = min(starts_per_episode, len(cands))
        starts.extend(sorted(int(c) for c in rng.choice(cands, size=k, replace=False)))
    return starts


def load_eval_windows(
    path: str,
    max_horizon: int,
    frames_per_action: int,
    episodes: int | None = None,
    starts_per_episode: int = 4,
    seed: int = 0,
    action_space: ActionSpace | None = None,
) -> tuple[list[EvalWindow], dict]:
    """Evaluation windows from a ``yan collect`` folder (see :func:`select_starts`), and a dict describing them.

    With ``action_space`` (the model's), the data's action space must match it.
    """
    from ..data import GameplayClipDataset, read_dataset_info

    info = read_dataset_info(path)  # clear errors for a missing or unfinished folder
    data_space = ActionSpace.from_dict(info["action_space"])
    if action_space is not None:
        check_action_spaces(action_space, data_space)
    if episodes is not None and episodes < 1:
        raise ValueError(f"`--episodes` must be >= 1, got {episodes}.")
    if starts_per_episode < 1:
        raise ValueError(f"`--starts-per-episode` must be >= 1, got {starts_per_episode}.")
    length = window_length(max_horizon, frames_per_action)
    # stride 1: every row where a full window fits inside one unbroken (episode, segment) run
    clips = GameplayClipDataset(path, clip_length=length, stride=1)
    episode_ids = np.asarray(clips.dataset["episode_id"])
    if len(clips) == 0:
        runs = _runs(episode_ids, np.asarray(clips.dataset["segment_id"]))
        longest = max((b - a for a, b in runs), default=0)
        raise ValueError(
            f"`--horizons`: horizon {max_horizon} needs {length} consecutive frames (1 + {max_horizon} x"
            f" {frames_per_action} frames per action), but the longest unbroken run in {path!r} has {longest};"
            f" horizons up to {max((longest - 1) // frames_per_action, 0)} fit this data."
        )
    starts = select_starts(clips.starts, episode_ids, episodes, starts_per_episode, seed)
    index = {s: i for i, s in enumerate(clips.starts)}
    windows = []
    for s in starts:
        item = clips[index[s]]
        windows.append(
            EvalWindow(
                frames=((item["frames"] + 1) / 2).clamp(0, 1),
                actions=item["actions"],
                episode_id=item["episode_id"],
                start_index=item["start_index"],
            )
        )
    described = {
        "num_windows": len(windows),
        "num_episodes": len({w.episode_id for w in windows}),
        "window_frames": length,
        "starts": [[w.episode_id, w.start_index] for w in windows],
        "scenario": info.get("scenario"),
        "resolution": info.get("resolution"),
        "frame_skip": info.get("frame_skip"),
        "agent": info.get("agent"),
    }
    return windows, described


# ---------------------------------------------------------------------------------------------- running the model
def _fit_frames(pipe, frames: torch.Tensor) -> torch.Tensor:
    """Real frames ``[N, 3, H, W]`` in [0, 1] at the model's resolution, cropped as the pipeline crops its start
    image (so targets and start frames line up pixel for pixel); a no-op when the sizes already match."""
    if tuple(frames.shape[-2:]) == tuple(pipe.resolution):
        return frames
    return ((pipe.preprocess_image(frames)[:, :, 0].float() + 1) / 2).clamp(0, 1)


def _generate(pipe, images: torch.Tensor, actions: torch.Tensor, seed: int, num_inference_steps: int, **guidance):
    """Worlds started from ``images`` ``[B, 3, H, W]`` in [0, 1], played with ``actions`` ``[B, N, A]``; returns
    the generated frames ``[B, N r, 3, H, W]`` in [0, 1]. ``guidance``: the guidance arguments that are set."""
    out = pipe(
        image=images,
        actions=actions,
        num_inference_steps=num_inference_steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **{name: value for name, value in guidance.items() if value is not None},
    )
    frames = torch.from_numpy(np.asarray(out.frames)).float().permute(0, 1, 4, 2, 3)
    expected = (images.shape[0], actions.shape[1] * pipe.frames_per_action)
    if tuple(frames.shape[:2]) != expected:
        raise RuntimeError(f"the pipeline returned {tuple(frames.shape[:2])} [worlds, frames], expected {expected}.")
    return frames


class _Figures:
    """Per-frame values of each metric for the model and the copy-last baseline, gathered across windows."""

    def __init__(self, metrics: dict):
        self.metrics = metrics
        self.values = {m: {"model": [], "copy_last": []} for m in metrics}
        self.predictions = 0

    def add(self, pred: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor) -> None:
        for name, fn in self.metrics.items():
            self.values[name]["model"].append(fn(pred, target))
            self.values[name]["copy_last"].append(fn(baseline, target))
        self.predictions += 1

    def summary(self) -> dict:
        out = {}
        for name, sides in self.values.items():
            out[name] = {side: summarize(torch.cat(v) if v else []) for side, v in sides.items()}
        out["num_predictions"] = self.predictions
        return out


def evaluate_windows(
    pipe,
    windows: list[EvalWindow],
    horizons=(1, 8, 32),
    num_inference_steps: int = 4,
    seed: int = 0,
    batch_size: int = 8,
    idm=None,
    lpips_fn=None,
    fvd_features=None,
    show_progress: bool = True,
    guidance_scale: float | None = None,
    guidance_steps: int | None = None,
) -> dict:
    """Score a world model on real windows (see the module docstring for the protocol).

    Args:
        pipe: a [`YanSimPipeline`] (or any object with its call signature, ``frames_per_action``, ``resolution``
            and ``action_space``).
        windows: from :func:`load_eval_windows`, each at least ``1 + max(horizons) r`` frames long.
        horizons: actions ahead to score; 1 is teacher-forced, the others read off one autoregressive rollout.
        num_inference_steps: denoising steps per frame.
        seed: window ``i`` is rolled out with ``torch.Generator().manual_seed(seed + i)``; its teacher-forced
            batches use the same seed.
        batch_size: teacher-forced one-step predictions run this many worlds per pipeline call.
        idm: an optional [`YanInverseDynamicsModel`] for the playability probe.
        lpips_fn, fvd_features: optional metric callables from :func:`load_lpips` / :func:`load_fvd_detector`.
        guidance_scale, guidance_steps: the pipeline's action guidance (``None``: the model folder's defaults).

    Returns:
        A dict with ``horizons`` (per horizon: mode, metric summaries for ``model`` and ``copy_last``),
        ``rollout_curve`` (mean PSNR/SSIM per rollout step), and ``fvd`` / ``idm`` when those ran.
    """
    horizons = parse_horizons(horizons, arg="horizons")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    if not windows:
        raise ValueError("`windows` is empty: there is nothing to evaluate.")
    r, H = pipe.frames_per_action, max(horizons)
    need = window_length(H, r)
    short = [i for i, w in enumerate(windows) if w.frames.shape[0] < need or w.actions.shape[0] < need]
    if short:
        raise ValueError(f"windows {short[:5]} are shorter than the {need} frames horizon {H} needs.")
    if idm is not None:
        check_action_spaces(pipe.action_space, idm.action_space, arg="--idm")
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)  # one bar over windows instead of one per call

    guidance = {"guidance_scale": guidance_scale, "guidance_steps": guidance_steps}
    metrics = {"psnr": frame_psnr, "ssim": frame_ssim}
    if lpips_fn is not None:
        metrics["lpips"] = lpips_fn
    per_horizon = {h: _Figures(metrics) for h in horizons}
    curve = [_Figures({"psnr": frame_psnr, "ssim": frame_ssim}) for _ in range(H)]
    pairs = {"real": [], "rollout": [], "teacher_forced": []}
    labels, videos = [], {"real": [], "model": [], "copy_last": []}

    for i, w in enumerate(tqdm(windows, desc="yan evaluate", disable=not show_progress)):
        frames = _fit_frames(pipe, w.frames[:need])
        acts = step_actions(w.actions[:need], r, H)  # [H, A]
        # 1. autoregressive rollout of H steps from the real start frame
        gen = _generate(pipe, frames[:1], acts[None], seed + i, num_inference_steps, **guidance)[0]  # [H r, 3, h, w]
        for k in range(1, H + 1):
            target = frames[step_frames(k, r)]
            pred = gen[step_frames(k, r).start - 1 : step_frames(k, r).stop - 1]  # gen[j] is window frame j + 1
            baseline = copy_last_frames(frames[0], r)
            curve[k - 1].add(pred, baseline, target)
            if k in per_horizon and k > 1:
                per_horizon[k].add(pred, baseline, target)
        # 2. teacher-forced one-step predictions from the real frame before every step (in batches)
        tf_first = []
        if 1 in per_horizon or idm is not None:
            starts = teacher_forced_starts(H, r)
            for b in range(0, H, batch_size):
                idx = list(range(b, min(b + batch_size, H)))
                images = frames[[starts[k] for k in idx]]
                one = _generate(pipe, images, acts[idx][:, None], seed + i, num_inference_steps, **guidance)
                for j, k in enumerate(idx):
                    target = frames[step_frames(k + 1, r)]
                    if 1 in per_horizon:
                        per_horizon[1].add(one[j], copy_last_frames(images[j], r), target)
                    tf_first.append(one[j, 0])
        # 3. playability pairs: (last frame before the step, first frame of the step), one per step
        if idm is not None:
            firsts = [step_frames(k, r).start for k in range(1, H + 1)]
            pairs["real"].append((frames[[f - 1 for f in firsts]], frames[firsts]))
            gen_before = torch.cat([frames[:1], gen[[f - 2 for f in firsts[1:]]]])  # gen[f-2] is window frame f-1
            pairs["rollout"].append((gen_before, gen[[f - 1 for f in firsts]]))
            pairs["teacher_forced"].append((frames[[f - 1 for f in firsts]], torch.stack(tf_first)))
            labels.append(button_labels(acts, pipe.action_space))
        if fvd_features is not None:
            videos["real"].append(frames[1:need])
            videos["model"].append(gen)
            videos["copy_last"].append(copy_last_frames(frames[0], need - 1))

    results = {"horizons": {}, "rollout_curve": {}}
    for h in horizons:
        entry = {
            "mode": "teacher_forced" if h == 1 else "autoregressive",
            "frames_compared": f"the {r} frames of step {h}: window frames {1 + (h - 1) * r}..{h * r}"
            + (", each step predicted from the real frame before it" if h == 1 else ", one rollout from frame 0"),
            **per_horizon[h].summary(),
        }
        psnr = entry["psnr"]
        entry["psnr_gain_over_copy_last_db"] = psnr["model"]["mean"] - psnr["copy_last"]["mean"]
        entry["beats_copy_last"] = bool(entry["psnr_gain_over_copy_last_db"] > 0)
        results["horizons"][str(h)] = entry
    for name in ("psnr", "ssim"):
        for side in ("model", "copy_last"):
            results["rollout_curve"][f"{name}_{side}"] = [c.summary()[name][side]["mean"] for c in curve]

    if fvd_features is not None:
        results["fvd"] = _fvd(fvd_features, videos)
    if idm is not None:
        results["idm"] = _idm_report(idm, pairs, torch.cat(labels), pipe.action_space)
    return results


def _fvd(features, videos: dict) -> dict:
    n, t = len(videos["real"]), videos["real"][0].shape[0]
    if n < 2 or t < FVD_MIN_FRAMES:
        return {"skipped": f"FVD needs at least 2 windows of {FVD_MIN_FRAMES}+ frames, got {n} of {t}."}
    feats = {k: features(torch.stack(v)) for k, v in videos.items()}
    return {
        "model": frechet_distance(feats["model"], feats["real"]),
        "copy_last": frechet_distance(feats["copy_last"], feats["real"]),
        "num_videos": n,
        "frames_per_video": t,
        "note": "rollouts of the longest horizon vs the real windows; with few videos FVD is strongly biased upward.",
    }


def _idm_report(idm, pairs: dict, labels: torch.Tensor, space: ActionSpace) -> dict:
    out = {"pair": "(last frame before the step, first frame of the step), labelled with the step's action"}
    for name, chunks in pairs.items():
        before = torch.cat([c[0] for c in chunks]) * 2 - 1
        after = torch.cat([c[1] for c in chunks]) * 2 - 1
        preds = torch.cat([idm.predict(before[s : s + 64], after[s : s + 64]) for s in range(0, len(before), 64)])
        out[name] = idm_accuracy(preds, labels, space.buttons)
    real = out["real"]["exact_match"]
    for name in ("rollout", "teacher_forced"):
        gen = out[name]["exact_match"]
        out[f"{name}_over_real_exact_match"] = gen / real if real else None
        out[f"{name}_over_real_per_button"] = out[name]["per_button_mean"] / out["real"]["per_button_mean"]
    out["majority_guess_exact_match"] = majority_accuracy(labels)
    return out
