#!/usr/bin/env python
"""Space benchmark: frames/s per session with 1, 2 and 4 simultaneous players on one shared pipeline.

    python benchmarks/bench_space_sessions.py --seconds 20 --out benchmarks/results/space_sessions.md

Each player is a real Space session (``diffusers_yan.space.SessionManager``: thread-pool inference with
``--torch-threads`` torch threads per worker, JPEG encoding, recording) playing uncapped (``max_fps=0``) with a
key held, for ``--seconds`` after a warm-up; a stand-in page receives the frames. ``max_sessions`` equals the number
of players, so nobody waits in the queue. Reported per player count: video frames/s per session (mean, min),
total frames/s, and the per-call latency (model call + JPEG encoding; one call gives ``frames_per_action`` frames).

The model is the bundled ``yan-sim-doom`` when it is installed (or ``--model PATH``); otherwise a small random
pipeline in the same architecture, and the report says so.
"""

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import sys
import time

import torch

from bench_yan_sim import small_pipeline  # the same random stand-in as the streaming benchmark
from diffusers_yan import YanSimPipeline
from diffusers_yan.bundled import BUNDLED_MODELS
from diffusers_yan.space import SessionManager, SpaceConfig


def small_random_pipeline() -> YanSimPipeline:
    """Random weights in the bundled model's architecture: stands in while that model is not installed."""
    return small_pipeline()


async def measure(pipe, players: int, seconds: float, warmup: float, torch_threads: int) -> dict:
    config = SpaceConfig(max_sessions=players, max_fps=0, torch_threads=torch_threads, idle_timeout=3600)
    manager = SessionManager({"model": pipe}, config)
    sessions = []

    async def page(meta, frames):  # a stand-in page: receives and drops the frames
        return None

    for i in range(players):
        session = manager.create_session()
        manager.attach(session.id, page)
        if not pipe.start_frames:
            session.start_upload = start_image(pipe)
            session.use_upload = True
        await manager.reset(session.id, seed=i)
        manager.set_keys(session.id, ["KeyW"] if i % 2 == 0 else ["ArrowLeft"])
        sessions.append(session)
    for session in sessions:
        await manager.play(session.id)
    await asyncio.sleep(warmup)
    start_counts = [s.frame_count for s in sessions]
    latencies = {s.id: [] for s in sessions}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(0.05)
        for s in sessions:
            if s.latency_ms and (not latencies[s.id] or latencies[s.id][-1] != s.latency_ms):
                latencies[s.id].append(s.latency_ms)
    elapsed = time.monotonic() - started
    fps = [(s.frame_count - c) / elapsed for s, c in zip(sessions, start_counts)]
    all_latencies = [v for values in latencies.values() for v in values]
    await manager.shutdown()
    return {
        "players": players,
        "fps_mean": statistics.mean(fps),
        "fps_min": min(fps),
        "fps_total": sum(fps),
        "latency_median": statistics.median(all_latencies) if all_latencies else float("nan"),
        "latency_p90": statistics.quantiles(all_latencies, n=10)[-1] if len(all_latencies) > 1 else float("nan"),
    }


def start_image(pipe):
    import numpy as np
    import PIL.Image

    height, width = pipe.resolution
    return PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: bundled yan-sim-doom, else random)")
    parser.add_argument("--players", default="1,2,4", help="comma-separated numbers of simultaneous players")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per player count")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of play before measuring")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per inference thread")
    parser.add_argument("--out", default=None, help="append a Markdown section to this file")
    args = parser.parse_args(argv)

    model = args.model or BUNDLED_MODELS.get("yan-sim-doom")
    if model is not None:
        pipe = YanSimPipeline.from_pretrained(model)
        model_desc = f"`{os.path.basename(os.path.normpath(model))}` (trained weights, from `{model}`)"
    else:
        pipe = small_random_pipeline()
        model_desc = "a small **random** Yan-Sim pipeline (the bundled `yan-sim-doom` was not installed yet)"
    height, width = pipe.resolution
    params = sum(p.numel() for p in pipe.unet.parameters()) + sum(p.numel() for p in pipe.vae.parameters())
    rows = []
    for players in [int(x) for x in args.players.split(",")]:
        result = asyncio.run(measure(pipe, players, args.seconds, args.warmup, args.torch_threads))
        rows.append(result)
        print(
            f"{players} player(s): {result['fps_mean']:.1f} frames/s per session (min {result['fps_min']:.1f}),"
            f" total {result['fps_total']:.1f}, latency median {result['latency_median']:.0f} ms",
            file=sys.stderr,
        )

    command = "python benchmarks/bench_space_sessions.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"## Space sessions: frames/s per player ({datetime.date.today().isoformat()})",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores visible, torch {torch.__version__}, device `cpu`,"
        f" float32, {args.torch_threads} torch thread(s) per inference thread.",
        f"Model: {model_desc}; {width}x{height} frames, {pipe.frames_per_action} video frames per model call,"
        f" {params / 1e6:.2f} M parameters, 4 denoising steps (shift window).",
        f"Each player plays uncapped with a key held for {args.seconds:g} s after {args.warmup:g} s of warm-up;"
        " `max_sessions` = players (no queue).",
        "",
        "| players | frames/s per session (mean) | slowest session | total frames/s | latency per call, median |"
        " p90 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['players']} | {r['fps_mean']:.1f} | {r['fps_min']:.1f} | {r['fps_total']:.1f} |"
            f" {r['latency_median']:.0f} ms | {r['latency_p90']:.0f} ms |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
