#!/usr/bin/env python
"""Yan-Gen streaming benchmark: per-block latency over many streamed blocks, KV cache vs recomputed context.

    python benchmarks/bench_yan_gen_kv_cache.py --blocks 100 --out benchmarks/results/yan_gen_kv_cache.md

Streams ``--blocks`` blocks (after one warm-up block) through a causal `YanGenTransformer3DModel` (random weights) as the pipeline does for
a distilled checkpoint: ``--steps`` denoising calls per block, then, for the cached path, one call at timestep 0
that appends the clean block to the KV cache. Two ways to give a block its context, run in lockstep (one block of each in
turn) in the same process on the same machine:

- **kv cache**: the block attends to the cached keys/values of the past window (`YanGenKVCache`);
- **recompute**: every denoising call runs the whole window (past clean frames at timestep 0 + the noisy block)
  through the model with the block-causal mask, as a model without a cache must.

Reported: median and p90 per-block latency for both, their ratio, early (blocks 2-11) vs late (last 10) medians
to show the cost is flat, the KV cache's size, and frames/s (video frames: 4 per latent frame). `--config
wan2.1-1.3b --height 352 --width 640 --device cuda` times the Wan2.1-1.3B-sized model where a GPU is available.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

from diffusers_yan import YanGenTransformer3DModel


CONFIGS = {
    # a small causal DiT that runs on a laptop CPU: 4 layers of width 128, 16 latent channels
    "small": dict(
        num_attention_heads=4,
        attention_head_dim=32,
        text_dim=64,
        ffn_dim=512,
        num_layers=4,
        freq_dim=64,
    ),
    # Wan2.1-T2V-1.3B's transformer (diffusers config), random weights
    "wan2.1-1.3b": dict(
        num_attention_heads=12,
        attention_head_dim=128,
        text_dim=4096,
        ffn_dim=8960,
        num_layers=30,
        freq_dim=256,
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="small", help="Transformer size (default small).")
    p.add_argument("--blocks", type=int, default=100, help="Blocks to stream (default 100).")
    p.add_argument("--frames-per-block", type=int, default=3, help="Latent frames per block (Self-Forcing: 3).")
    p.add_argument("--window", type=int, default=12, help="KV window in latent frames (default 12 = 4 blocks).")
    p.add_argument("--steps", type=int, default=4, help="Denoising calls per block (distilled: 4).")
    p.add_argument("--height", type=int, default=128, help="Video height in pixels (latents are /8).")
    p.add_argument("--width", type=int, default=128, help="Video width in pixels (latents are /8).")
    p.add_argument("--text-len", type=int, default=64, help="Text tokens (512 in Wan; fewer keeps CPU runs short).")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--out", default=None, help="Append the results as markdown to this file.")
    return p.parse_args(argv)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Stream:
    """One streamed world: `step()` makes the next block and returns its wall-clock seconds."""

    def __init__(self, model, args, use_cache: bool):
        self.model, self.args, self.use_cache = model, args, use_cache
        self.device, self.dtype = args.device, getattr(torch, args.dtype)
        self.gen = torch.Generator().manual_seed(0)
        self.text = torch.randn(1, args.text_len, model.config.text_dim, generator=self.gen).to(
            self.device, self.dtype
        )
        self.steps = torch.linspace(1000, 250, args.steps)
        self.cache, self.past = None, []  # `past`: clean latent frames kept for the recompute path (same window)

    @torch.no_grad()
    def step(self) -> float:
        model, args, device, n = self.model, self.args, self.device, self.args.frames_per_block
        noise = torch.randn(1, 16, n, args.height // 8, args.width // 8, generator=self.gen).to(device, self.dtype)
        _sync(device)
        start = time.perf_counter()
        x = noise
        for t in self.steps:
            if self.use_cache:
                v = model(x, t.expand(1).to(device), self.text, kv_cache=self.cache).sample
            else:
                context = torch.cat(self.past + [x], dim=2)
                t_frames = torch.zeros(1, context.shape[2], device=device)
                t_frames[:, -n:] = t
                v = model(context, t_frames, self.text).sample[:, :, -n:]
            x = x - v * (t / 1000 / len(self.steps))  # an Euler-like update; the values do not matter for timing
        if self.use_cache:
            t0 = torch.zeros(1, device=device)
            self.cache = model(x, t0, self.text, kv_cache=self.cache, return_kv_cache=True).kv_cache
        else:
            self.past = (self.past + [x])[-(args.window // n) :]
        _sync(device)
        return time.perf_counter() - start


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    model = YanGenTransformer3DModel(
        **CONFIGS[args.config],
        action_space=None,
        num_frames_per_block=args.frames_per_block,
        kv_cache_max_frames=args.window,
        rope_max_seq_len=1024,
    )
    model = model.to(args.device).eval()
    if args.dtype != "float32":
        model = model.to(getattr(torch, args.dtype))
    # the two worlds advance in lockstep, one block each in turn, so a load spike on this shared machine hits
    # both paths alike (the first block of each is the warm-up and is not counted)
    streams = {"kv cache": Stream(model, args, True), "recompute": Stream(model, args, False)}
    times = {name: [] for name in streams}
    for _ in range(args.blocks + 1):
        for name, s in streams.items():
            times[name].append(s.step())
    results = {name: (times[name][1:], getattr(streams[name].cache, "nbytes", 0)) for name in streams}

    def med(x):
        return statistics.median(x) * 1000

    def p90(x):
        return sorted(x)[int(0.9 * (len(x) - 1))] * 1000

    video_frames_per_block = 4 * args.frames_per_block
    lines = [
        f"## Yan-Gen KV cache vs recomputed context ({datetime.date.today().isoformat()})",
        "",
        f"Command: `python {' '.join([os.path.relpath(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))}`",
        "",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores visible ({platform.processor() or 'unknown'}),"
        f" torch {torch.__version__}, device `{args.device}`, {args.dtype}.",
        f"Config `{args.config}` ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, random weights);"
        f" {args.height}x{args.width} video -> {args.height // 16}x{args.width // 16} tokens per latent frame;"
        f" blocks of {args.frames_per_block} latent frames, window {args.window} latent frames;"
        f" {args.steps} denoising calls per block; {args.text_len} text tokens; {args.blocks} blocks.",
        "",
        "| context | median ms/block | p90 ms/block | blocks 2-11 median | last 10 median | video frames/s | KV cache |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (times, nbytes) in results.items():
        lines.append(
            f"| {name} | {med(times):.1f} | {p90(times):.1f} | {med(times[1:11]):.1f} | {med(times[-10:]):.1f} |"
            f" {video_frames_per_block / statistics.median(times):.1f} | {nbytes / 2**20:.2f} MiB |"
        )
    ratio = statistics.median(results["recompute"][0]) / statistics.median(results["kv cache"][0])
    lines += ["", f"Recompute / KV cache median per-block latency: **{ratio:.2f}x**.", ""]
    text = "\n".join(lines)
    print(text)  # the benchmark's report goes to stdout (and to --out)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
