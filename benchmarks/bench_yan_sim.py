#!/usr/bin/env python
"""Yan-Sim streaming benchmark: per-frame latency over a long chained rollout, with and without the KV cache.

    python benchmarks/bench_yan_sim.py --steps 300 --out benchmarks/results/yan_sim_streaming.md

Runs a small Sim pipeline (random weights, the bundled model's architecture unless --model is given) for
``--steps`` chained one-action calls, as a player would, and reports:

- per-frame latency (median, p90) over steps 10-60 and 250-300: the late median must stay within 15% of the
  early one (flat time per frame however long the world runs);
- frames/s (video frames: ``frames_per_action`` per call) and peak resident memory;
- the same rollout with the KV cache replaced by recomputing the context window every call (the plain path),
  as a latency ratio;
- fp32 vs bf16 on this machine, as a ratio.

All variants run in the same process, one after another, on the same machine.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch
from diffusers import DDIMScheduler

from diffusers_yan import AutoencoderKLYan, YanSimPipeline, YanSimUNetModel


def small_pipeline(dtype=torch.float32) -> YanSimPipeline:
    torch.manual_seed(0)
    vae = AutoencoderKLYan(
        latent_channels=16,
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        norm_num_groups=16,
        spatial_compression_ratio=8,
        temporal_compression_ratio=1,
    )
    unet = YanSimUNetModel(
        sample_size=(6, 8),  # 48x64 frames, as the bundled model
        in_channels=16,
        out_channels=16,
        block_out_channels=(64, 128),
        layers_per_block=1,
        attention_levels=(True, True),
        attention_head_dim=32,
        norm_num_groups=16,
        action_embed_dim=128,
        temporal_cache_size=16,
    )
    scheduler = DDIMScheduler(prediction_type="v_prediction", timestep_spacing="trailing", rescale_betas_zero_snr=True)
    pipe = YanSimPipeline(vae=vae.eval(), unet=unet.eval(), scheduler=scheduler)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


@torch.no_grad()
def rollout_without_cache(pipe: YanSimPipeline, image, actions, steps: int, generator):
    """The plain path: the same shift-window sampler, but each call re-encodes the last ``temporal_cache_size``
    clean frames through the UNet instead of reading their keys/values from the cache. Yields the latency of each
    step (one action, one emitted frame)."""
    window_len = pipe.unet.config.temporal_cache_size
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    ts = scheduler.timesteps.tolist()
    dtype = pipe.unet.dtype
    z0 = pipe.vae.encode(pipe.preprocess_image(image).to(pipe.vae.dtype)).latent_dist.mode()
    z0 = ((z0 - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor).to(dtype)
    _, vae_cache = pipe.vae.decode_stream(z0.to(pipe.vae.dtype))
    context, context_actions = [z0], [torch.zeros(1, pipe.action_space.dim, dtype=dtype)]
    window = z0[:, :, :0]
    t0 = time.perf_counter()
    for i in range(len(actions) + steps - 1):
        action = actions[max(i - (steps - 1), 0)][None].to(dtype)
        noise = torch.randn(z0.shape, generator=generator).to(dtype)
        window = torch.cat([window, noise], 2)
        n = window.shape[2]
        levels = [ts[n - 1 - j] for j in range(n)]
        ctx = torch.cat(context[-window_len:], 2)
        t = torch.tensor([0] * ctx.shape[2] + levels)[None]
        acts = torch.cat([torch.cat(context_actions[-window_len:])[None], action[:, None].expand(-1, n, -1)], 1)
        pred = pipe.unet(torch.cat([ctx, window], 2), t, actions=acts).sample[:, :, ctx.shape[2] :]
        window = torch.stack(
            [scheduler.step(pred[:, :, j], levels[j], window[:, :, j]).prev_sample for j in range(n)], 2
        )
        if i >= steps - 1:
            clean, window = window[:, :, :1], window[:, :, 1:]
            context.append(clean)
            context_actions.append(action)
            context, context_actions = context[-window_len:], context_actions[-window_len:]
            _, vae_cache = pipe.vae.decode_stream(
                (clean / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).to(pipe.vae.dtype), vae_cache
            )
            yield time.perf_counter() - t0, None
            t0 = time.perf_counter()


@torch.no_grad()
def rollout_with_cache(
    pipe: YanSimPipeline, image, actions, steps: int, seed: int, guidance_scale: float = 1.0, guidance_steps=None
):
    """The pipeline as a player drives it: one call per action. Yields (latency, KV-cache bytes) per step."""
    kw = {"num_inference_steps": steps, "output_type": "np", "guidance_scale": guidance_scale}
    kw["guidance_steps"] = guidance_steps
    state = pipe(image=image, actions=actions[:1], generator=torch.Generator().manual_seed(seed), **kw).state
    for a in actions[1:]:
        t0 = time.perf_counter()
        state = pipe(state=state, actions=a[None], **kw).state
        yield time.perf_counter() - t0, state.kv_cache.nbytes


def summarize(lat: list[float], frames_per_call: int, early=(10, 60), late=(250, 300)) -> dict:
    e = lat[early[0] : early[1]]
    late_part = lat[late[0] : late[1]] if len(lat) >= late[1] else lat[-50:]
    ms = lambda xs, q: 1000 * float(np.quantile(xs, q))  # noqa: E731
    return {
        "early_median_ms": ms(e, 0.5),
        "early_p90_ms": ms(e, 0.9),
        "late_median_ms": ms(late_part, 0.5),
        "late_p90_ms": ms(late_part, 0.9),
        "late_over_early": statistics.median(late_part) / statistics.median(e),
        "frames_per_s": frames_per_call / statistics.median(lat),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default=None, help="a YanSimPipeline folder (default: random weights, bundled architecture)"
    )
    p.add_argument("--steps", type=int, default=300, help="chained one-action calls per variant")
    p.add_argument("--num_inference_steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--skip_no_cache", action="store_true")
    p.add_argument(
        "--guidance",
        default="",
        help="comma-separated action guidance settings to time beside the plain path, SCALE or SCALE:STEPS (guide"
        " each frame's last STEPS steps), e.g. 2.5,3:2",
    )
    p.add_argument("--out", default=None, help="append a markdown report here")
    p.add_argument("--note", default=None, help="a line about the conditions of the run, added to the report")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = (lambda dt: YanSimPipeline.from_pretrained(args.model, dtype=dt)) if args.model else small_pipeline
    pipe = load(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    h, w = pipe.resolution
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    gen = torch.Generator().manual_seed(0)
    actions = torch.stack([pipe.action_space.sample(gen) for _ in range(args.steps + 1)])
    fpa = pipe.frames_per_action
    results = {}

    # the variants run in lockstep, one step of each in turn, so that a change in the machine's load hits all alike
    pipe_bf16 = load(torch.bfloat16)
    pipe_bf16.set_progress_bar_config(disable=True)
    variants = {
        "fp32 + KV cache": rollout_with_cache(pipe, image, actions, args.num_inference_steps, 0),
        "bf16 + KV cache": rollout_with_cache(pipe_bf16, image, actions, args.num_inference_steps, 0),
    }
    for item in filter(None, (g.strip() for g in args.guidance.split(","))):
        scale, _, last = item.partition(":")
        try:
            scale, last = float(scale), int(last) if last else None
        except ValueError:
            p.error(f"--guidance: {item!r} is not SCALE or SCALE:STEPS")
        if not scale > 1 or (last is not None and last < 1):
            p.error(f"--guidance: {item!r} needs a scale > 1 and steps >= 1")
        name = f"fp32 + KV cache, action guidance {scale:g}" + (f" on the last {last} steps" if last else "")
        variants[name] = rollout_with_cache(
            pipe, image, actions, args.num_inference_steps, 0, guidance_scale=scale, guidance_steps=last
        )
    if not args.skip_no_cache:
        variants["fp32, recompute context (no cache)"] = rollout_without_cache(
            pipe, image, actions[1:], args.num_inference_steps, torch.Generator().manual_seed(0)
        )
    records = {name: [] for name in variants}
    for steps in zip(*variants.values()):
        for name, record in zip(variants, steps):
            records[name].append(record)
    results = {}
    for name, recs in records.items():
        results[name] = summarize([r[0] for r in recs], fpa)
    cache_bytes = [r[1] for r in records["fp32 + KV cache"]]
    results["fp32 + KV cache"]["kv_cache_mb"] = (cache_bytes[59] / 2**20, cache_bytes[-1] / 2**20)
    results["fp32 + KV cache"]["peak_rss_mb"] = peak_rss_mb()

    base = results["fp32 + KV cache"]
    ratios = {
        "bf16 speed-up over fp32 (median latency)": base["late_median_ms"]
        / results["bf16 + KV cache"]["late_median_ms"]
    }
    if not args.skip_no_cache:
        ratios["KV cache speed-up over recomputing the context (median latency)"] = (
            results["fp32, recompute context (no cache)"]["late_median_ms"] / base["late_median_ms"]
        )
    flat_ok = base["late_over_early"] <= 1.15
    machine = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s),"
        f" load average {os.getloadavg()[0]:.1f} at the end of the run"
    )
    lines = [
        f"## Yan-Sim streaming, {datetime.date.today().isoformat()}",
        "",
        f"- command: `python benchmarks/bench_yan_sim.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- machine: {machine}",
        f"- model: {args.model or 'random weights, bundled architecture'}; {h}x{w} frames, {fpa} frames per action,"
        f" {args.num_inference_steps} DDIM steps, KV window {pipe.unet.config.temporal_cache_size} frames",
        f"- flat per-frame time (late median within 15% of early): {'yes' if flat_ok else 'NO'} ({base['late_over_early']:.3f})",
        "",
        "| variant | median ms (10-60) | p90 ms (10-60) | median ms (250-300) | p90 ms (250-300) | late/early | frames/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['early_median_ms']:.1f} | {r['early_p90_ms']:.1f} | {r['late_median_ms']:.1f} |"
            f" {r['late_p90_ms']:.1f} | {r['late_over_early']:.3f} | {r['frames_per_s']:.1f} |"
        )
    kv_early, kv_late = base["kv_cache_mb"]
    lines += [
        "",
        f"- KV cache of a world: {kv_early:.2f} MB at step 60, {kv_late:.2f} MB at step {len(cache_bytes)}",
        f"- peak resident memory of the whole run (all variants in one process): {base['peak_rss_mb']:.0f} MB",
    ]
    if args.note:
        lines += [f"- note: {args.note}"]
    lines += [f"- {k}: {v:.2f}x" for k, v in ratios.items()]
    report = "\n".join(lines) + "\n"
    print(report)
    print(json.dumps({"results": results, "ratios": ratios}, indent=1))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as f:
            f.write(report + "\n")
    return 0 if flat_ok else 1


if __name__ == "__main__":
    sys.exit(main())
