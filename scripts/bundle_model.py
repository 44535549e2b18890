#!/usr/bin/env python
"""Assemble a trained Yan-Sim pipeline into a Hub-ready bundled model folder.

    python scripts/bundle_model.py --pipeline outputs/train/sim --heldout outputs/data/mwh_heldout \
        --eval_json outputs/eval/yan-sim-doom.json --benchmark benchmarks/results/yan_sim_doom_speed.md \
        --commands scripts/yan_sim_doom_commands.sh --out src/diffusers_yan/assets/models/yan-sim-doom

The folder gets: ``model_index.json`` + component folders (safetensors), ``start_frames/*.png`` (real first frames of
held-out episodes, never seen in training), and a model card (``README.md``) with the evaluation table, the speed
measurement and the exact commands that produced the model. Training checkpoints and logs are left out.
"""

import argparse
import datetime
import json
import os
import shutil
import sys

import numpy as np


def _num(value, digits: int = 2) -> str:
    """A figure for the card; ``-`` where the report has none (e.g. a ratio over a zero)."""
    return "-" if value is None else f"{value:.{digits}f}"


def evaluation_table(report: dict) -> str:
    """Markdown tables from a `yan evaluate` JSON: PSNR/SSIM per horizon beside copy-last-frame, and the IDM probe."""
    res = report["results"]
    rows = [
        "| horizon (actions) | PSNR model (dB) | PSNR copy-last (dB) | SSIM model | SSIM copy-last | predictions |",
        "|---|---|---|---|---|---|",
    ]
    for h, r in sorted(res["horizons"].items(), key=lambda kv: int(kv[0])):
        rows.append(
            f"| {h} | {r['psnr']['model']['mean']:.2f} | {r['psnr']['copy_last']['mean']:.2f} |"
            f" {r['ssim']['model']['mean']:.3f} | {r['ssim']['copy_last']['mean']:.3f} | {r['psnr']['model']['count']} |"
        )
    idm = res.get("idm")
    if idm:
        rows += [
            "",
            "| inverse-dynamics probe: frame pairs | exact-match accuracy | per-button accuracy |",
            "|---|---|---|",
            f"| real engine | {idm['real']['exact_match']:.3f} | {idm['real']['per_button_mean']:.3f} |",
            f"| generated (rollout) | {idm['rollout']['exact_match']:.3f} | {idm['rollout']['per_button_mean']:.3f} |",
            f"| generated (teacher-forced) | {idm['teacher_forced']['exact_match']:.3f} |"
            f" {idm['teacher_forced']['per_button_mean']:.3f} |",
            f"| always the most common action | {idm['majority_guess_exact_match']:.3f} | |",
            "",
            f"Rollout / real exact-match ratio: {_num(idm['rollout_over_real_exact_match'])}; teacher-forced /"
            f" real: {_num(idm['teacher_forced_over_real_exact_match'])}.",
        ]
        rates = {k: idm[k].get("per_button_rates", {}) for k in ("real", "rollout", "teacher_forced")}
        buttons = [b for b in ("MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT") if b in rates["real"]]
        if buttons:
            rows += [
                "",
                "Where the errors are (the probe's hit rate on pairs where the button was held / false-alarm rate on"
                " pairs where it was not):",
                "",
                "| button | held in | real engine | generated (rollout) | generated (teacher-forced) |",
                "|---|---|---|---|---|",
            ]
            for b in buttons:
                cells = [f"{_num(rates[k][b]['hit_rate'])} / {_num(rates[k][b]['false_alarm_rate'])}" for k in rates]
                rows.append(f"| {b} | {_num(rates['real'][b]['held'])} of the pairs | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def machine_text(settings: dict) -> str:
    machine = settings.get("machine", "")
    if isinstance(machine, dict):
        keep = [
            f"{k} {v}"
            for k, v in machine.items()
            if k in ("cpu", "processor", "cores", "cpu_count", "torch_threads", "device")
        ]
        return ", ".join(keep) or ", ".join(f"{k} {v}" for k, v in machine.items())
    return str(machine)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pipeline", required=True, help="YanSimPipeline folder written by train_yan_sim.py")
    p.add_argument("--heldout", required=True, help="held-out `yan collect` dataset for the start frames")
    p.add_argument("--eval_json", default=None, help="`yan evaluate --json` output for the card")
    p.add_argument("--benchmark", default=None, help="markdown speed report (benchmarks/results/...) for the card")
    p.add_argument("--commands", default=None, help="shell file with the exact commands that produced the model")
    p.add_argument("--num_start_frames", type=int, default=4)
    p.add_argument(
        "--limitations", default=None, help="a markdown file with the model's known limitations for the card"
    )
    p.add_argument(
        "--guidance_scale", type=float, default=None, help="store this default action guidance in model_index.json"
    )
    p.add_argument("--guidance_steps", type=int, default=None, help="and this default number of guided steps")
    p.add_argument("--name", default="yan-sim-doom")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from datasets import load_from_disk

    from diffusers_yan import YanSimPipeline

    pipe = YanSimPipeline.from_pretrained(args.pipeline)
    if args.guidance_scale is not None:
        pipe.register_to_config(default_guidance_scale=args.guidance_scale, default_guidance_steps=args.guidance_steps)
    scale, steps = pipe.config.default_guidance_scale, pipe.config.default_guidance_steps
    if args.eval_json:  # the card's figures must come from the settings the folder ships with
        evaluated = json.load(open(args.eval_json)).get("settings", {})
        if (evaluated.get("guidance_scale", 1.0), evaluated.get("guidance_steps")) != (scale, steps):
            p.error(
                f"--eval_json was made with guidance_scale={evaluated.get('guidance_scale', 1.0)},"
                f" guidance_steps={evaluated.get('guidance_steps')}, but the folder would ship {scale}, {steps}."
            )
    tmp = args.out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)

    # real start frames: the first frame of several held-out episodes
    ds = load_from_disk(args.heldout).select_columns(["episode_id", "frame_index", "frame"])
    episodes = np.asarray(ds["episode_id"])
    firsts = [int(np.flatnonzero(episodes == e)[0]) for e in sorted(set(episodes.tolist()))][: args.num_start_frames]
    os.makedirs(os.path.join(tmp, "start_frames"))
    for k, idx in enumerate(firsts):
        ds[idx]["frame"].convert("RGB").save(os.path.join(tmp, "start_frames", f"{k:03d}.png"))

    h, w = pipe.resolution
    space = pipe.action_space
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    n_vae = sum(p.numel() for p in pipe.vae.parameters())
    info = json.load(open(os.path.join(args.heldout, "yan_dataset.json")))
    sections = [
        "---",
        "library_name: diffusers",
        "license: apache-2.0",
        "pipeline_tag: image-to-video",
        "tags: [diffusers-yan, yan-sim, world-model, doom, vizdoom, interactive-video]",
        "---",
        "",
        f"# {args.name}: a Yan-Sim world model of Doom that runs on a CPU",
        "",
        f"A small Yan-Sim simulator (causal VAE + action-cross-attention UNet, shift-window DDIM with"
        f" {pipe.unet.config.temporal_cache_size}-frame temporal KV cache) trained by diffusers-yan on real Doom"
        f" play recorded with ViZDoom in the `{info.get('scenario')}` scenario, {w}x{h} pixels, frame skip"
        f" {info.get('frame_skip')}. It is small on purpose: {n_unet / 1e6:.1f}M UNet + {n_vae / 1e6:.1f}M VAE"
        " parameters, so that it plays in real time on a laptop CPU.",
        "",
        f"Actions ({space.dim} buttons, one per model call): {', '.join(space.buttons)}."
        f" Frames per action: {pipe.frames_per_action}.",
        "",
        "```py",
        "import torch",
        "from PIL import Image",
        "from diffusers_yan import BUNDLED_MODELS, YanSimPipeline",
        "",
        f'pipe = YanSimPipeline.from_pretrained(BUNDLED_MODELS["{args.name}"])',
        'out = pipe(image=Image.open(pipe.start_frames[0]), actions=["MOVE_FORWARD"] * 16,',
        "           generator=torch.Generator().manual_seed(0))",
        "```",
        "",
        "Play it in the browser with `yan play`, or render a clip with `yan generate --out clip.mp4`.",
    ]
    if scale > 1:
        sections += [
            "",
            f"It ships with action guidance on: `default_guidance_scale={scale:g}`"
            + (f", `default_guidance_steps={steps}`" if steps else "")
            + " in `model_index.json`. Each call also runs the window with the UNet's null action (the training"
            " data's mean action, `unet/config.json`) and extrapolates away from it"
            + (f" on each frame's last {steps} denoising steps" if steps else "")
            + ", so the frames follow the actions more strongly; pass `guidance_scale=1.0` to turn it off.",
        ]
    if args.eval_json:
        report = json.load(open(args.eval_json))
        settings = report.get("settings", {})
        sections += [
            "",
            "## Evaluation against the game engine",
            "",
            "Held-out episodes (seeds never used in training), played in the real engine: the model starts from a real"
            " frame, is fed the real actions, and its frames are compared with the engine's. Horizon 1 is"
            " teacher-forced; longer horizons are autoregressive rollouts. Copy-last-frame is the baseline that"
            " repeats the start frame.",
            "",
            evaluation_table(report),
            "",
            f"Command: `{settings.get('command', 'yan evaluate')}` ({settings.get('date', '')}; {machine_text(settings)}).",
        ]
        for note in report.get("notes", []):
            sections.append(f"- {note}")
    if args.benchmark:
        speed = open(args.benchmark).read().strip().replace("\n## ", "\n### ")
        sections += ["", "## Speed", "", "#" + speed if speed.startswith("## ") else speed]
    if args.commands:
        sections += [
            "",
            "## How it was made",
            "",
            "The exact commands (data collection, VAE, simulator, evaluation), in order:",
            "",
            "```bash",
            open(args.commands).read().strip(),
            "```",
        ]
    sections += ["", "## Limitations", ""]
    if args.limitations:
        sections += [open(args.limitations).read().strip(), ""]
    sections += [
        f"Card written by `scripts/bundle_model.py` on {datetime.date.today().isoformat()}.",
    ]
    with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write("\n".join(sections) + "\n")
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
