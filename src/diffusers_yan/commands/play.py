"""`yan play`: play a Yan-Sim or Yan-Gen world in the browser with the keyboard (the Gradio Space, served locally).

yan play                                   # the bundled model at http://127.0.0.1:7860
yan play --model path/to/model --max-sessions 4 --idle-timeout 120
yan play --model path/to/yan-sim --model path/to/yan-gen --gen-resolution 320x576   # a model choice on the page
yan play --host 0.0.0.0 --port 8080        # reachable from other machines

The kind of each model (Yan-Sim, or a causal Yan-Gen with a prompt box on the page) is read from its
model_index.json.
"""

import argparse
import logging
import sys


logger = logging.getLogger("diffusers_yan.play")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "play",
        help="play a world in the browser (keyboard, many visitors at once)",
        description="Serve the Yan Space: a game page where every browser tab plays its own world on one shared"
        " model, plus a request/response clip mode at /clip.",
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="model folder or Hub repo id, Yan-Sim or (causal) Yan-Gen; repeat for a model choice on the page"
        " (default: the bundled models)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument(
        "--max-sessions",
        type=int,
        default=2,
        help="worlds that advance at once; later players wait in a queue with their position shown",
    )
    p.add_argument(
        "--idle-timeout", type=float, default=300.0, help="seconds without input after which a world is freed"
    )
    p.add_argument(
        "--max-fps",
        type=float,
        default=15.0,
        help="cap on video frames/s per player (the simulator's native rate; 0: as fast as the model runs)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads per inference thread (1 does best on a small shared CPU)",
    )
    p.add_argument(
        "--gen-resolution",
        type=parse_gen_resolution,
        default=(480, 832),
        metavar="HxW",
        help="resolution of Yan-Gen worlds, multiples of 16 (default 480x832, Wan2.1's 480p)",
    )
    p.add_argument(
        "--gen-guidance-scale",
        type=float,
        default=1.0,
        help="classifier-free guidance of Yan-Gen worlds: 1 (off) for distilled few-step models, >1 for base models",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--no-clip-mode", action="store_true", help="do not mount the Gradio clip mode at /clip")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (needs internet)")
    p.set_defaults(func=run)


def parse_gen_resolution(text: str) -> tuple[int, int]:
    """``"HEIGHTxWIDTH"`` -> ``(height, width)``: the Yan-Gen resolution of ``--gen-resolution`` (and of the Space's
    ``YAN_GEN_RESOLUTION`` variable, in ``spaces_app/app.py``). Raises ``argparse.ArgumentTypeError``."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 480x832, got {text!r}") from None
    return height, width


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from ..space import SpaceConfig, build_app, load_manager, serve
    except ModuleNotFoundError as e:
        print(
            f"error: `yan play` needs the Space extra ({e.name} is missing): pip install 'diffusers-yan[space]'",
            file=sys.stderr,
        )
        return 2
    try:
        config = SpaceConfig(
            max_sessions=args.max_sessions,
            idle_timeout=args.idle_timeout,
            max_worlds=max(32, args.max_sessions),
            max_fps=args.max_fps,
            torch_threads=args.torch_threads,
            gen_resolution=args.gen_resolution,
            gen_guidance_scale=args.gen_guidance_scale,
        )
        manager = load_manager(args.model, config, device=args.device)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = build_app(manager, clip_mode=not args.no_clip_mode)
    logger.info(f"Yan Space: http://{args.host}:{args.port}  (models: {', '.join(manager.pipelines)})")
    try:
        serve(app, host=args.host, port=args.port, share=args.share)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
