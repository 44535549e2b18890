"""Collection throughput of `yan collect` (frames/s), end to end and engine-only, for 1 and N worker processes.

End to end = played frames / wall time of `collect()` (play + filters + captions + PNG + shards + final dataset).
Engine-only = played frames / time spent inside the play loop (engine + agent), summed over episodes.

```bash
python benchmarks/collect_throughput.py --episodes 4 --max-steps 400 --workers 1 2 --out benchmarks/results/collect_throughput.md
```
"""

import argparse
import datetime
import logging
import os
import platform
import shutil
import sys
import tempfile


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="Measure yan collect throughput.")
    parser.add_argument("--scenario", default="my_way_home", help="vizdoom scenario")
    parser.add_argument("--agent", default="random", help="agent (random, explore)")
    parser.add_argument("--episodes", type=int, default=4, help="episodes per measurement")
    parser.add_argument("--max-steps", type=int, default=400, help="frames per episode at most")
    parser.add_argument("--resolutions", nargs="+", default=["64x48", "160x120"], help="resolutions to measure")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="worker counts to measure")
    parser.add_argument("--out", default=None, help="markdown file to write the table to")
    parser.add_argument("--append", action="store_true", help="append to --out instead of overwriting it")
    return parser.parse_args(input_args)


def main(args):
    from diffusers_yan.data import CollectConfig, DoomEnvConfig, collect

    rows = []
    for res in args.resolutions:
        for workers in args.workers:
            tmp = tempfile.mkdtemp(prefix="yan_bench_")
            try:
                env = DoomEnvConfig(scenario=args.scenario, resolution=res, max_steps=args.max_steps)
                info = collect(
                    CollectConfig(env=env, episodes=args.episodes, agent=args.agent, seed=0, out=tmp, workers=workers)
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            played = info["num_played_frames"]
            rows.append(
                (res, workers, played, info["num_frames"], info["frames_per_second"], played / info["engine_seconds"])
            )
            logging.info("%s workers=%d: %.0f frames/s end to end", res, workers, info["frames_per_second"])
    table = "| resolution | workers | played frames | kept frames | end-to-end frames/s | engine-only frames/s (per worker) |\n"
    table += "| --- | --- | --- | --- | --- | --- |\n"
    table += "\n".join(f"| {r} | {w} | {p} | {k} | {fps:.0f} | {eng:.0f} |" for r, w, p, k, fps, eng in rows)
    text = (
        ("\n" if args.append else "# `yan collect` throughput\n")
        + f"\nCommand: `python benchmarks/collect_throughput.py {' '.join(sys.argv[1:])}`  \n"
        f"Date: {datetime.date.today()}  \nMachine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other"
        f" jobs (numbers are lower bounds), no GPU, Python {platform.python_version()}.  \n"
        f"Setup: scenario `{args.scenario}`, agent `{args.agent}`, {args.episodes} episodes x up to {args.max_steps}"
        " frames, frame skip 4, all filters, engine captions, PNG frames + depth.\n\n" + table + "\n"
    )
    print(text)  # the benchmark's output is the table itself
    if args.out:
        with open(args.out, "a" if args.append else "w") as f:
            f.write(text)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(parse_args())
