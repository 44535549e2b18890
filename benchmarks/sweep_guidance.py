"""Choose a Yan-Sim model's action-guidance scale on a validation set, side by side with no guidance.

    python benchmarks/sweep_guidance.py --model outputs/train/sim --data outputs/data/mwh_val \
        --idm outputs/train/idm --settings 1,2,3,3:2 --horizons 1,8,32 --out benchmarks/results/guidance_sweep.md

Every setting runs the same `yan evaluate` protocol (same windows, same seeds) in one process, one after another,
and the report gives, per setting: PSNR beside copy-last-frame at each horizon, and the inverse-dynamics probe on
real and generated pairs (exact match, the generated/real ratio, and how often MOVE_FORWARD is read where it was
not held, the failure action guidance targets). Use a validation set that is neither the training data nor the
held-out set the model is finally reported on, so the choice does not leak into the reported figures.
"""

import argparse
import datetime
import os
import sys
import time

import torch

from bench_yan_sim import cpu_name  # the machine line of the streaming benchmark
from diffusers_yan import YanSimPipeline
from diffusers_yan.evaluation import YanInverseDynamicsModel, evaluate_windows, load_eval_windows, parse_horizons


def parse_settings(text: str) -> list[tuple[float, int | None]]:
    """``"1,2,3:2"`` -> ``[(1.0, None), (2.0, None), (3.0, 2)]``: a scale, optionally ``:`` the guided steps."""
    settings = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        scale, _, steps = item.partition(":")
        try:
            setting = (float(scale), int(steps) if steps else None)
        except ValueError:
            raise ValueError(f"`--settings`: {item!r} is not SCALE or SCALE:STEPS.") from None
        if not setting[0] >= 1.0 or (setting[1] is not None and setting[1] < 1):
            raise ValueError(f"`--settings`: {item!r} needs a scale >= 1 (1 = off) and steps >= 1.")
        settings.append(setting)
    if not settings:
        raise ValueError("`--settings` is empty.")
    return settings


def row(setting: tuple[float, int | None], results: dict, horizons) -> str:
    scale, steps = setting
    cells = [f"{scale:g}" + ("" if scale == 1 else f", last {steps} steps" if steps else ", every step")]
    for h in horizons:
        psnr = results["horizons"][str(h)]["psnr"]
        cells.append(f"{psnr['model']['mean']:.2f} / {psnr['copy_last']['mean']:.2f}")
    idm = results["idm"]
    forward = idm["rollout"]["per_button_rates"].get("MOVE_FORWARD", {})
    false_alarm = forward.get("false_alarm_rate")
    cells += [
        f"{idm['real']['exact_match']:.3f}",
        f"{idm['rollout']['exact_match']:.3f}",
        f"{idm['teacher_forced']['exact_match']:.3f}",
        f"{idm['rollout_over_real_exact_match']:.2f}",
        "-" if false_alarm is None else f"{false_alarm:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a YanSimPipeline folder")
    p.add_argument("--data", required=True, help="validation `yan collect` folder (not the reported held-out set)")
    p.add_argument("--idm", required=True, help="a YanInverseDynamicsModel folder")
    p.add_argument(
        "--settings",
        default="1,2,3",
        help="comma-separated guidance settings, SCALE or SCALE:STEPS (guide only each frame's last STEPS steps);"
        " 1 = off",
    )
    p.add_argument("--horizons", default="1,8,32")
    p.add_argument("--starts-per-episode", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="append the markdown report here")
    args = p.parse_args(argv)
    try:
        settings = parse_settings(args.settings)
        horizons = parse_horizons(args.horizons)
    except ValueError as e:
        p.error(str(e))
    torch.set_num_threads(args.threads)

    pipe = YanSimPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    idm = YanInverseDynamicsModel.from_pretrained(args.idm).eval()
    windows, info = load_eval_windows(
        args.data,
        max_horizon=max(horizons),
        frames_per_action=pipe.frames_per_action,
        starts_per_episode=args.starts_per_episode,
        seed=args.seed,
        action_space=pipe.action_space,
    )
    lines = [
        f"## Action-guidance sweep, {datetime.date.today().isoformat()}",
        "",
        f"- command: `python benchmarks/sweep_guidance.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__},"
        f" {torch.get_num_threads()} thread(s)",
        f"- model: `{args.model}` (null action: {pipe.unet.config.null_action or 'zeros'});"
        f" data: `{args.data}`, {info['num_windows']} windows from {info['num_episodes']} episodes, seed {args.seed}",
        "",
        "| guidance | "
        + " | ".join(f"PSNR h{h} model / copy-last" for h in horizons)
        + " | IDM real | IDM rollout | IDM teacher-forced | rollout / real | MOVE_FORWARD false alarms (rollout) |",
        "|---" * (1 + len(horizons) + 5) + "|",
    ]
    for setting in settings:
        t0 = time.time()
        results = evaluate_windows(
            pipe,
            windows,
            horizons=horizons,
            seed=args.seed,
            idm=idm,
            show_progress=False,
            guidance_scale=setting[0],
            guidance_steps=setting[1],
        )
        lines.append(row(setting, results, horizons))
        print(lines[-1], f"({time.time() - t0:.0f} s)", flush=True)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
