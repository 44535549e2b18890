"""``yan collect`` and ``yan balance``.

Examples:

```bash
yan collect --scenario my_way_home --episodes 20 --agent explore --seed 0 --resolution 160x120 --out doom_mwh
yan collect --scenario freedoom2 --map MAP01 --episodes 8 --agent random --workers 2 --out doom_map01 --balance
yan balance --in doom_mwh --out doom_mwh_balanced --clusters 32
```
"""

from __future__ import annotations

import logging
import sys

from ..actions import DOOM_BUTTONS


logger = logging.getLogger(__name__)


def _fail(message: str) -> int:
    """Print a one-line error (no traceback) and return exit code 2, like argparse does for bad arguments."""
    print(f"yan: error: {message}", file=sys.stderr)
    return 2


def register(subparsers):
    from .agents import AGENTS
    from .collector import CAPTIONERS
    from .env import KNOWN_SCENARIOS
    from .filters import FILTER_REASONS

    p = subparsers.add_parser(
        "collect",
        help="play Doom with an agent and write a filtered, captioned Hugging Face dataset",
        description="Play ViZDoom with an agent and write a filtered, captioned Hugging Face dataset to --out."
        " A killed run resumes when run again with the same arguments.",
    )
    p.add_argument("--scenario", required=True, help=f"vizdoom scenario, one of: {', '.join(KNOWN_SCENARIOS)}")
    p.add_argument(
        "--map", default=None, help="map of a full-game scenario (freedoom2: MAP01..MAP32, freedoom1: E1M1..)"
    )
    p.add_argument("--episodes", type=int, default=10, help="number of episodes to play")
    p.add_argument("--agent", default="random", help=f"who plays: {', '.join(AGENTS)}")
    p.add_argument(
        "--ppo-model", default=None, help="PPO policy .zip for --agent ppo (training_examples/train_ppo_agent.py)"
    )
    p.add_argument("--seed", type=int, default=0, help="base seed; the same seed gives the same dataset")
    p.add_argument("--resolution", default="160x120", help="frame size WxH (e.g. 64x48, 160x120, 320x240)")
    p.add_argument(
        "--frame-skip", type=int, default=4, help="engine tics per recorded frame (4 = 8.75 fps of game time)"
    )
    p.add_argument("--max-steps", type=int, default=1000, help="recorded frames per episode at most")
    p.add_argument(
        "--buttons",
        default=",".join(DOOM_BUTTONS),
        help="comma-separated vizdoom buttons = the dataset's action space (default: the 8 Doom model buttons)",
    )
    p.add_argument("--hud", action="store_true", help="render the status bar (off by default)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--captioner", default="engine", help=f"caption source: {', '.join(CAPTIONERS)}")
    p.add_argument("--vlm-model", default=None, help="model folder or Hub id for --captioner vlm (Qwen2.5-VL class)")
    p.add_argument("--caption-window", type=int, default=16, help="frames per local caption")
    p.add_argument(
        "--filters",
        default=",".join(FILTER_REASONS),
        help=f"filters to apply, comma separated, or 'none' (available: {', '.join(FILTER_REASONS)})",
    )
    p.add_argument("--balance", action="store_true", help="balance the dataset (PlayGen Algorithm 2) before saving")
    p.add_argument("--clusters", type=int, default=32, help="k-means clusters for --balance")
    p.add_argument("--balance-window", type=int, default=16, help="frames per sampled unit for --balance")
    p.add_argument("--keep-shards", action="store_true", help="keep per-episode shards (to add episodes later)")
    p.set_defaults(func=run_collect)

    b = subparsers.add_parser(
        "balance",
        help="balance a collected dataset over positions (PlayGen Algorithm 2)",
        description="k-means on transition features + non-negative least squares for per-cluster counts.",
    )
    b.add_argument("--in", dest="input", required=True, help="dataset folder written by `yan collect`")
    b.add_argument("--out", required=True, help="output folder for the balanced dataset")
    b.add_argument("--clusters", type=int, default=32, help="k-means clusters k")
    b.add_argument("--window", type=int, default=16, help="frames per sampled unit (clips stay contiguous)")
    b.add_argument("--size", type=int, default=None, help="frames in the balanced set (default: as many as the input)")
    b.add_argument("--replace", action="store_true", help="oversample small clusters (duplicates frames)")
    b.add_argument("--seed", type=int, default=0, help="k-means and sampling seed")
    b.set_defaults(func=run_balance)


def _setup_logging():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_collect(args) -> int:
    from .collector import CollectConfig, collect
    from .env import DoomEnvConfig
    from .filters import FilterConfig

    _setup_logging()
    try:
        enabled = () if args.filters.strip().lower() == "none" else tuple(f.strip() for f in args.filters.split(","))
        env = DoomEnvConfig(
            scenario=args.scenario,
            map=args.map,
            resolution=args.resolution,
            frame_skip=args.frame_skip,
            buttons=tuple(b.strip() for b in args.buttons.split(",") if b.strip()),
            hud=args.hud,
            max_steps=args.max_steps,
        )
        config = CollectConfig(
            env=env,
            episodes=args.episodes,
            agent=args.agent,
            seed=args.seed,
            out=args.out,
            workers=args.workers,
            ppo_model=args.ppo_model,
            filters=FilterConfig(enabled=enabled),
            caption_window=args.caption_window,
            captioner=args.captioner,
            vlm_model=args.vlm_model,
            balance=args.balance,
            balance_clusters=args.clusters,
            balance_window=args.balance_window,
            keep_shards=args.keep_shards,
        )
        from .agents import make_agent

        if config.agent == "ppo":
            make_agent("ppo", env.buttons, ppo_model=config.ppo_model)  # fail now, not inside a worker
        from .env import DoomEnv

        DoomEnv(env).close()  # unknown buttons etc. fail here with a clear message
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    info = collect(config)
    logger.info(
        "wrote %s: %d frames, %.0f frames/s, dropped %s",
        args.out,
        info["num_frames"],
        info["frames_per_second"] or 0,
        info["filter_counts"],
    )
    return 0


def run_balance(args) -> int:
    import json
    import os
    import shutil

    from .balance import balance_dataset
    from .collector import DATASET_INFO_NAME
    from .loader import _load, read_dataset_info

    _setup_logging()
    try:
        info = read_dataset_info(args.input)
        dataset = _load(args.input)
        if os.path.abspath(args.input) == os.path.abspath(args.out):
            raise ValueError("`--out` must differ from `--in` (the input is memory-mapped while balancing).")
        balanced, report = balance_dataset(
            dataset, k=args.clusters, window=args.window, num_samples=args.size, seed=args.seed, replace=args.replace
        )
    except (ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    balanced.save_to_disk(args.out)
    info = dict(info, num_frames=len(balanced), balance=report)
    info["num_segments"] = len(set(zip(balanced["episode_id"], balanced["segment_id"])))
    card = os.path.join(args.input, "README.md")
    if os.path.exists(card):
        shutil.copy(card, os.path.join(args.out, "README.md"))
        with open(os.path.join(args.out, "README.md"), "a") as f:
            cb, ca = report["coverage_before"], report["coverage_after"]
            f.write(
                f"\n## Balancing\n\nBalanced with PlayGen Algorithm 2 (k={report['k']}, window {report['window']}):"
                f" {report['frames_before']} -> {report['frames_after']} frames, position coverage entropy"
                f" {cb['entropy_bits']:.3f} -> {ca['entropy_bits']:.3f} bits over {ca['cells']} cells.\n"
            )
    with open(os.path.join(args.out, DATASET_INFO_NAME), "w") as f:
        json.dump(info, f, indent=2)
    logger.info(
        "balanced %s -> %s: coverage entropy %.3f -> %.3f bits",
        args.input,
        args.out,
        report["coverage_before"]["entropy_bits"],
        report["coverage_after"]["entropy_bits"],
    )
    return 0
