"""`yan evaluate`: score a Yan-Sim model against real engine play and write every figure to a JSON file.

yan evaluate --model PATH --data DIR --horizons 1,8,32 --json OUT.json
yan evaluate --model PATH --data DIR --episodes 10 --starts-per-episode 4 --idm IDM_PATH --json OUT.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time


logger = logging.getLogger("diffusers_yan.evaluate")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a world model against real engine play (PSNR/SSIM per horizon, copy-last baseline, IDM probe)",
        description=(
            "Start from real frames of held-out play, feed the real actions, and compare the model's frames with"
            " the engine's at each horizon (teacher-forced at 1, autoregressive beyond), beside the copy-last-frame"
            " baseline. Writes every figure and the settings that produced it to --json."
        ),
    )
    p.add_argument(
        "--model",
        default=None,
        help="YanSimPipeline folder, Hub repo id or bundled name (default: the bundled 'yan-sim-doom')",
    )
    p.add_argument("--data", required=True, help="held-out dataset folder written by `yan collect`")
    p.add_argument(
        "--horizons", default="1,8,32", help="actions ahead to score, comma-separated (1 is teacher-forced)"
    )
    p.add_argument("--json", required=True, help="where to write the results (JSON)")
    p.add_argument("--episodes", type=int, default=None, help="use the first N episodes of --data (default: all)")
    p.add_argument("--starts-per-episode", type=int, default=4, help="windows (start frames) drawn per episode")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of starts and the model's noise")
    p.add_argument("--num-inference-steps", type=int, default=4, help="denoising steps per frame")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="action guidance of the pipeline (default: the model folder's default_guidance_scale; 1 = off)",
    )
    p.add_argument(
        "--guidance-steps",
        type=int,
        default=None,
        help="guide only each frame's last N denoising steps (default: the model folder's default_guidance_steps)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="worlds per call for the teacher-forced predictions")
    p.add_argument("--idm", default=None, help="a YanInverseDynamicsModel folder: adds the playability probe")
    p.add_argument(
        "--lpips",
        default="alex",
        choices=["alex", "vgg", "squeeze", "none"],
        help="LPIPS backbone, if its weights are cached locally",
    )
    p.add_argument(
        "--fvd-detector",
        default=None,
        help="I3D TorchScript file for FVD (default: $YAN_FVD_DETECTOR or the torch hub cache)",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument(
        "--num-threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); 1 is often much faster on a CPU shared with other jobs",
    )
    p.set_defaults(func=run)


def _resolve_model(model: str | None) -> str:
    from ..bundled import BUNDLED_MODELS

    if model is None:
        if "yan-sim-doom" not in BUNDLED_MODELS:
            raise ValueError("`--model`: not given and the bundled model 'yan-sim-doom' is not installed.")
        return BUNDLED_MODELS["yan-sim-doom"]
    if model in BUNDLED_MODELS:
        return BUNDLED_MODELS[model]
    looks_local = os.path.isabs(model) or model.startswith(".") or model.count("/") != 1 or os.path.exists(model)
    if looks_local and not os.path.isdir(model):
        raise FileNotFoundError(f"`--model`: no model folder at {model!r}.")
    if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "model_index.json")):
        raise FileNotFoundError(f"`--model`: {model!r} has no model_index.json; it is not a YanSimPipeline folder.")
    return model


def _settings(args, model_path: str, pipe, data_info: dict, notes: list[str]) -> dict:
    import diffusers
    import torch
    import torchmetrics

    from .. import __version__

    return {
        "model": os.path.abspath(model_path) if os.path.isdir(model_path) else model_path,
        "data": os.path.abspath(args.data),
        "horizons": list(args.horizons_parsed),
        "episodes": args.episodes,
        "starts_per_episode": args.starts_per_episode,
        "seed": args.seed,
        "seeds": "window i: torch.Generator().manual_seed(seed + i) for its rollout and its teacher-forced batches;"
        " starts drawn with numpy default_rng(seed)",
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale
        if args.guidance_scale is not None
        else pipe.config.default_guidance_scale,
        "guidance_steps": args.guidance_steps
        if args.guidance_steps is not None
        else pipe.config.default_guidance_steps,
        "batch_size": args.batch_size,
        "idm": os.path.abspath(args.idm) if args.idm else None,
        "frames_per_action": pipe.frames_per_action,
        "resolution": list(pipe.resolution),
        "action_space": list(pipe.action_space.names),
        "windows": data_info,
        "machine": {
            "node": platform.node(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "diffusers_yan": __version__,
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "torchmetrics": torchmetrics.__version__,
            "python": platform.python_version(),
        },
        "command": "yan " + " ".join(sys.argv[1:]) if os.path.basename(sys.argv[0]) == "yan" else None,
    }


def _write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, allow_nan=False)
    os.replace(tmp, path)  # a reader never sees a half-written file


def _log_table(results: dict) -> None:
    logger.info("horizon  mode             PSNR model / copy-last (dB)   SSIM model / copy-last")
    for h, e in results["horizons"].items():
        p, s = e["psnr"], e["ssim"]
        logger.info(
            f"{h:>7}  {e['mode']:<15}  {p['model']['mean']:6.2f} / {p['copy_last']['mean']:6.2f}"
            f"               {s['model']['mean']:.3f} / {s['copy_last']['mean']:.3f}"
        )
    if "idm" in results:
        i = results["idm"]
        logger.info(
            f"IDM exact-match accuracy: real {i['real']['exact_match']:.3f}, rollout {i['rollout']['exact_match']:.3f},"
            f" teacher-forced {i['teacher_forced']['exact_match']:.3f} (majority guess {i['majority_guess_exact_match']:.3f})"
        )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_windows, load_eval_windows, parse_horizons

    t0 = time.time()
    # 1. check the arguments before loading anything heavy
    args.horizons_parsed = parse_horizons(args.horizons)
    if not os.path.isdir(args.data):
        raise FileNotFoundError(f"`--data`: no dataset folder at {args.data!r} (make one with `yan collect`).")
    if args.num_inference_steps < 1:
        raise ValueError(f"`--num-inference-steps` must be >= 1, got {args.num_inference_steps}.")
    if args.batch_size < 1:
        raise ValueError(f"`--batch-size` must be >= 1, got {args.batch_size}.")
    if args.guidance_scale is not None and not args.guidance_scale >= 1.0:
        raise ValueError(f"`--guidance-scale` must be >= 1 (1 = no action guidance), got {args.guidance_scale}.")
    if args.guidance_steps is not None and args.guidance_steps < 1:
        raise ValueError(f"`--guidance-steps` must be >= 1, got {args.guidance_steps}.")
    if args.idm is not None and not os.path.isfile(os.path.join(args.idm, "config.json")):
        raise FileNotFoundError(f"`--idm`: {args.idm!r} is not a YanInverseDynamicsModel folder (no config.json).")
    if args.num_threads is not None:
        if args.num_threads < 1:
            raise ValueError(f"`--num-threads` must be >= 1, got {args.num_threads}.")
        import torch

        torch.set_num_threads(args.num_threads)
    model_path = _resolve_model(args.model)

    # 2. the model, the data windows and the optional probes
    from ..pipelines.yan_sim.pipeline_yan_sim import YanSimPipeline
    from .inverse_dynamics import YanInverseDynamicsModel
    from .metrics import load_fvd_detector, load_lpips

    pipe = YanSimPipeline.from_pretrained(model_path).to(args.device)
    windows, data_info = load_eval_windows(
        args.data,
        max_horizon=max(args.horizons_parsed),
        frames_per_action=pipe.frames_per_action,
        episodes=args.episodes,
        starts_per_episode=args.starts_per_episode,
        seed=args.seed,
        action_space=pipe.action_space,
    )
    notes = []
    if tuple(data_info["resolution"] or ())[::-1] != tuple(pipe.resolution):
        notes.append(
            f"data frames {data_info['resolution']} (WxH) were resized and center-cropped to the model's"
            f" {pipe.resolution[::-1]} as the pipeline does with its start image."
        )
    lpips_fn, note = (None, "LPIPS skipped: --lpips none.") if args.lpips == "none" else load_lpips(args.lpips)
    notes.append(note)
    fvd_features, note = load_fvd_detector(args.fvd_detector)
    notes.append(note)
    idm = YanInverseDynamicsModel.from_pretrained(args.idm).eval() if args.idm else None
    if idm is None:
        notes.append("playability probe skipped: no --idm given.")

    # 3. evaluate and write
    results = evaluate_windows(
        pipe,
        windows,
        horizons=args.horizons_parsed,
        num_inference_steps=args.num_inference_steps,
        seed=args.seed,
        batch_size=args.batch_size,
        idm=idm,
        lpips_fn=lpips_fn,
        fvd_features=fvd_features,
        guidance_scale=args.guidance_scale,
        guidance_steps=args.guidance_steps,
    )
    for n in notes:
        logger.info(n)
    payload = {
        "results": results,
        "settings": _settings(args, model_path, pipe, data_info, notes),
        "notes": notes,
        "seconds": round(time.time() - t0, 2),
    }
    _write_json(args.json, payload)
    _log_table(results)
    logger.info(f"wrote {args.json} ({len(windows)} windows, {payload['seconds']} s)")
    return 0
