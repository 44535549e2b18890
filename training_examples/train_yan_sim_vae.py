#!/usr/bin/env python
"""Stage 1 of Yan-Sim: train the causal video VAE (`AutoencoderKLYan`) on gameplay clips.

Loss (seed slides, "VAE Training"): MSE + a perceptual term + a small KL. The perceptual term is LPIPS when its
backbone weights are available locally (torchmetrics' LPIPS, which needs torchvision and cached weights); on a
machine without them the script says so in its log and uses an offline term instead (1 - MS-SSIM, or 1 - SSIM on
frames too small for MS-SSIM's five scales) — never silently.

With ``--depth`` it trains on the dataset's depth maps (1 channel) instead of RGB: the depth VAE of Yan-Edit.

Launch:

    accelerate launch training_examples/train_yan_sim_vae.py --dataset_dir data/doom \
        --output_dir outputs/yan-sim-vae --spatial_compression 8 --temporal_compression 2 --max_train_steps 5000

    # continue after a kill
    accelerate launch training_examples/train_yan_sim_vae.py ... --resume_from_checkpoint latest
"""

import argparse
import logging
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from diffusers_yan import AutoencoderKLYan
from diffusers_yan.training_utils import (
    checkpoint_step,
    load_clip_datasets,
    parse_int_tuple,
    push_output_to_hub,
    resolve_resume_path,
    save_checkpoint,
)


logger = logging.getLogger("train_yan_sim_vae")


def parse_args(input_args=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset_dir", required=True, help="dataset folder(s) written by `yan collect`, comma-separated")
    p.add_argument("--depth", action="store_true", help="train on depth maps (1 channel) instead of RGB frames")
    p.add_argument("--clip_latent_frames", type=int, default=3, help="latent frames per training clip")
    p.add_argument("--init_vae", default=None, help="start from this AutoencoderKLYan folder")
    p.add_argument("--spatial_compression", type=int, default=8, choices=[8, 16, 32])
    p.add_argument("--temporal_compression", type=int, default=2, choices=[1, 2])
    p.add_argument("--latent_channels", type=int, default=16)
    p.add_argument(
        "--block_out_channels", default="32,64,128", help="encoder widths, one per down block (2**len = spatial ratio)"
    )
    p.add_argument("--layers_per_block", type=int, default=1)
    p.add_argument("--norm_num_groups", type=int, default=16)
    p.add_argument(
        "--no_light_decoder", action="store_true", help="use the symmetric decoder instead of the light one"
    )
    p.add_argument(
        "--perceptual", default="auto", choices=["auto", "lpips", "ssim", "none"], help="perceptual loss term"
    )
    p.add_argument("--perceptual_weight", type=float, default=0.5)
    p.add_argument("--kl_weight", type=float, default=1e-6)
    p.add_argument(
        "--latent_stats_samples",
        type=int,
        default=512,
        help="clips used at the end to set the config's shift_factor/scaling_factor (unit-variance latents); 0 skips",
    )
    p.add_argument("--train_batch_size", type=int, default=8)
    p.add_argument("--max_train_steps", type=int, default=5000)
    p.add_argument("--learning_rate", type=float, default=3e-4)
    p.add_argument(
        "--lr_scheduler",
        default="constant_with_warmup",
        choices=["constant_with_warmup", "cosine", "linear"],
        help="learning-rate schedule (diffusers.optimization.get_scheduler)",
    )
    p.add_argument("--lr_warmup_steps", type=int, default=100)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--checkpointing_steps", type=int, default=500)
    p.add_argument("--checkpoints_total_limit", type=int, default=2)
    p.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder, or "latest"')
    p.add_argument("--logging_steps", type=int, default=20)
    p.add_argument("--report_to", default=None)
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    p.add_argument("--hub_token", default=None)
    args = p.parse_args(input_args)
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id (e.g. your-name/yan-sim-doom)")
    for path in args.dataset_dir.split(","):
        if not os.path.isdir(path):
            p.error(f"--dataset_dir {path!r} does not exist")
    if args.clip_latent_frames < 1:
        p.error("--clip_latent_frames must be >= 1")
    return args


class PerceptualLoss(torch.nn.Module):
    """LPIPS when available locally, else 1 - (MS-)SSIM from torchmetrics; ``kind`` says which one runs."""

    def __init__(self, mode: str, image_size: tuple[int, int]):
        super().__init__()
        self.kind, self.fn = "none", None
        if mode in ("auto", "lpips"):
            try:
                from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

                self.fn = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
                self.kind = "lpips"
            except Exception as e:  # torchvision or its weights are missing (the case on an offline CPU box)
                if mode == "lpips":
                    raise RuntimeError(f"--perceptual lpips requested but LPIPS cannot load here: {e}") from e
                logger.warning(
                    f"LPIPS backbone weights are not available locally ({type(e).__name__}: {e}); using an offline"
                    " (MS-)SSIM perceptual term instead."
                )
        if self.fn is None and mode != "none":
            from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim
            from torchmetrics.functional.image import structural_similarity_index_measure as ssim

            # MS-SSIM needs 5 scales with an 11-px window: sides of at least (11 - 1) * 2**4 = 160 px
            if min(image_size) > 160:
                self.fn, self.kind = (lambda a, b: msssim(a, b, data_range=1.0)), "ms-ssim"
            else:
                self.fn, self.kind = (lambda a, b: ssim(a, b, data_range=1.0)), "ssim"
        logger.info(f"perceptual loss: {self.kind}")

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [-1, 1]."""
        if self.fn is None:
            return recon.new_zeros(())
        a, b = ((recon.float() + 1) / 2).clamp(0, 1), ((target.float() + 1) / 2).clamp(0, 1)
        if self.kind == "lpips":
            if a.shape[1] == 1:
                a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
            return self.fn(a, b)
        return 1 - self.fn(a, b)


@torch.no_grad()
def latent_statistics(vae: AutoencoderKLYan, dataset, num_samples: int, depth: bool, seed: int) -> tuple[float, float]:
    """``(shift_factor, scaling_factor)`` so that ``(z - shift) * scale`` has zero mean and unit variance.

    Diffusion models assume unit-variance data (as SD's 0.18215 and SD3/Flux's shift/scale factors do); the
    pipelines apply these two config values to every latent.
    """
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:num_samples]
    latents = []
    for start in range(0, len(order), 32):
        items = [dataset[int(i)] for i in order[start : start + 32]]
        x = torch.stack([(it["depth"] * 2 - 1) if depth else it["frames"] for it in items])
        x = x.to(vae.device, vae.dtype).permute(0, 2, 1, 3, 4)
        latents.append(vae.encode(x).latent_dist.mode().float().cpu())
    z = torch.cat(latents)
    return round(z.mean().item(), 4), round(1.0 / z.std().item(), 4)


class VAETrainingWrapper(torch.nn.Module):
    """encode -> sample -> decode in one ``forward``, so DDP's gradient synchronisation sees the whole step."""

    def __init__(self, vae: AutoencoderKLYan):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        return recon, posterior.kl().mean()


def main(args):
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
    )
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    # 1. the model
    if args.init_vae:
        vae = AutoencoderKLYan.from_pretrained(args.init_vae)
    else:
        vae = AutoencoderKLYan(
            in_channels=1 if args.depth else 3,
            out_channels=1 if args.depth else 3,
            latent_channels=args.latent_channels,
            block_out_channels=parse_int_tuple(args.block_out_channels, "--block_out_channels"),
            layers_per_block=args.layers_per_block,
            norm_num_groups=args.norm_num_groups,
            spatial_compression_ratio=args.spatial_compression,
            temporal_compression_ratio=args.temporal_compression,
            light_decoder=not args.no_light_decoder,
        )
    if args.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    r = vae.config.temporal_compression_ratio

    # 2. the data: clips of 1 + (n-1) r frames, RGB or depth
    clip_frames = 1 + (args.clip_latent_frames - 1) * r
    dataset = load_clip_datasets(args.dataset_dir, clip_frames, with_depth=args.depth)
    height, width = dataset[0]["frames"].shape[-2:]
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
    )
    perceptual = PerceptualLoss(args.perceptual if args.perceptual_weight > 0 else "none", (height, width))
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.learning_rate, weight_decay=0.0, betas=(0.9, 0.99))
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps
    )
    model = VAETrainingWrapper(vae)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    perceptual.to(accelerator.device)
    if accelerator.is_main_process and args.report_to:
        accelerator.init_trackers("train_yan_sim_vae", config={k: v for k, v in vars(args).items() if v is not None})

    # 3. resume
    global_step = 0
    resume = resolve_resume_path(args.output_dir, args.resume_from_checkpoint)
    if resume:
        accelerator.load_state(resume)
        global_step = checkpoint_step(resume)
        logger.info(f"resumed from {resume} at step {global_step}")

    # 4. the loop
    progress = tqdm(total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process)
    progress.set_description("train_yan_sim_vae")
    logs, t0 = {"mse": [], "perceptual": [], "kl": []}, time.time()
    final = {}
    while global_step < args.max_train_steps:
        for batch in loader:
            with accelerator.accumulate(model):
                x = (batch["depth"] * 2 - 1) if args.depth else batch["frames"]  # [B, F, C, H, W] in [-1, 1]
                x = x.to(accelerator.device).permute(0, 2, 1, 3, 4)  # -> [B, C, F, H, W]
                recon, kl = model(x)
                mse = F.mse_loss(recon.float(), x.float())
                flat = lambda v: v.permute(0, 2, 1, 3, 4).flatten(0, 1)  # noqa: E731  [B*F, C, H, W]
                perc = perceptual(flat(recon), flat(x))
                kl = kl / math.prod(x.shape[1:])
                loss = mse + args.perceptual_weight * perc + args.kl_weight * kl
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            progress.update(1)
            for k, v in (("mse", mse), ("perceptual", perc), ("kl", kl)):
                logs[k].append(float(v.detach()))
            if global_step % args.logging_steps == 0:
                final = {k: float(np.mean(v)) for k, v in logs.items()}
                final["psnr"] = 10 * math.log10(4.0 / max(final["mse"], 1e-10))  # range [-1, 1] -> peak-to-peak 2
                final["steps_per_s"] = args.logging_steps / (time.time() - t0)
                t0, logs = time.time(), {k: [] for k in logs}
                progress.set_postfix(psnr=f"{final['psnr']:.2f}", perc=f"{final['perceptual']:.3f}")
                accelerator.log(final, step=global_step)
            if global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
            if global_step >= args.max_train_steps:
                break

    # 5. save the model (+ a short card)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).vae
        if args.latent_stats_samples > 0:
            shift, scale = latent_statistics(model.eval(), dataset, args.latent_stats_samples, args.depth, args.seed)
            model.register_to_config(shift_factor=shift, scaling_factor=scale)
            logger.info(f"latent statistics: shift_factor {shift}, scaling_factor {scale}")
        model.save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, "README.md"), "w") as f:
            f.write(
                "---\nlibrary_name: diffusers\ntags: [diffusers-yan, vae, yan-sim]\nlicense: apache-2.0\n---\n\n"
                f"# AutoencoderKLYan trained with `train_yan_sim_vae.py`\n\n"
                f"{'Depth' if args.depth else 'RGB'} frames {width}x{height}, compression "
                f"{r}x{model.config.spatial_compression_ratio}x{model.config.spatial_compression_ratio}, "
                f"{model.config.latent_channels} latent channels, perceptual term `{perceptual.kind}`.\n\n"
                f"Last logged training figures (step {global_step}): "
                + ", ".join(f"{k} {v:.4f}" for k, v in final.items())
                + "\n"
            )
        if args.push_to_hub:
            push_output_to_hub(args.output_dir, args.hub_model_id, args.hub_token)
        logger.info(f"saved AutoencoderKLYan to {args.output_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
