"""`yan generate`: render a Yan-Sim rollout to a video file.

yan generate --actions "MOVE_FORWARD*8,TURN_LEFT*4" --out clip.mp4
yan generate --model path/or/repo --image start.png --actions "..." --seed 0 --out clip.mp4
"""

import argparse
import logging
import os
import sys


logger = logging.getLogger("diffusers_yan.generate")

DEFAULT_ACTIONS = "MOVE_FORWARD*12,TURN_LEFT*6,MOVE_FORWARD*8,TURN_RIGHT*10,MOVE_FORWARD*12"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="render a rollout of a Yan-Sim world to a video",
        description="Start a world from an image and play a sequence of actions in it; write the frames to a video.",
    )
    p.add_argument("--model", default=None, help="model folder or Hub repo id (default: the bundled 'yan-sim-doom')")
    p.add_argument("--image", default=None, help="start frame (any size; default: the model's first start frame)")
    p.add_argument(
        "--actions",
        default=DEFAULT_ACTIONS,
        help="comma-separated actions, NAME*count for repeats and A+B for held combos, e.g. 'MOVE_FORWARD*8,TURN_LEFT*4'",
    )
    p.add_argument("--out", default="clip.mp4", help="output video (.mp4 or .gif)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the world")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per frame (the shift-window length)")
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="action guidance: >1 follows the actions more strongly at twice the compute (default: the model's)",
    )
    p.add_argument(
        "--guidance-steps", type=int, default=None, help="guide only each frame's last N steps (default: the model's)"
    )
    p.add_argument("--fps", type=int, default=15, help="video frame rate")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from diffusers.utils import export_to_gif, export_to_video
    from PIL import Image

    from ..bundled import BUNDLED_MODELS
    from ..pipelines.yan_sim.pipeline_yan_sim import YanSimPipeline

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = args.model
    if model is None:
        if "yan-sim-doom" not in BUNDLED_MODELS:
            print("error: no --model given and the bundled model 'yan-sim-doom' is not installed.", file=sys.stderr)
            return 2
        model = BUNDLED_MODELS["yan-sim-doom"]
    if args.image is not None and not os.path.isfile(args.image):
        print(f"error: --image {args.image!r} is not a file.", file=sys.stderr)
        return 2
    if args.guidance_scale is not None and not args.guidance_scale >= 1.0:
        print(f"error: --guidance-scale must be >= 1 (1 = off), got {args.guidance_scale}.", file=sys.stderr)
        return 2
    if args.guidance_steps is not None and args.guidance_steps < 1:
        print(f"error: --guidance-steps must be >= 1, got {args.guidance_steps}.", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    pipe = YanSimPipeline.from_pretrained(model, dtype=dtype).to(args.device)
    try:
        actions = pipe.action_space.parse(args.actions, arg="--actions")
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.image is not None:
        image_path = args.image
    elif pipe.start_frames:
        image_path = pipe.start_frames[0]
    else:
        print(f"error: the model at {model!r} ships no start frames; pass --image.", file=sys.stderr)
        return 2
    try:
        image = Image.open(image_path)
        image.load()
    except Exception as e:  # PIL raises several types for unreadable files
        print(f"error: cannot read --image {image_path!r}: {e}", file=sys.stderr)
        return 2
    out = pipe(
        image=image,
        actions=actions,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        guidance_steps=args.guidance_steps,
        generator=torch.Generator().manual_seed(args.seed),
    )
    height, width = pipe.resolution
    start = pipe.video_processor.postprocess(pipe.preprocess_image(image)[:, :, 0], output_type="pil")[0]
    frames = [start] + out.frames[0]
    fps = args.fps
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.out.lower().endswith(".gif"):
        export_to_gif(frames, args.out, fps=fps)
    else:
        export_to_video(frames, args.out, fps=fps)
    logger.info(f"wrote {len(frames)} frames ({len(actions)} actions) at {width}x{height}, {fps} fps to {args.out}")
    return 0
