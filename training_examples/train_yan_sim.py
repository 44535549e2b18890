#!/usr/bin/env python
"""Stage 2 of Yan-Sim: train the action-conditioned UNet with Diffusion Forcing on gameplay clips.

The VAE (stage 1, ``train_yan_sim_vae.py``) is frozen; clips are encoded to latents on the fly. Every latent
frame gets its own noise level (Diffusion Forcing); actions enter through cross-attention; the loss is MSE on
the configured prediction (v by default, with zero-terminal-SNR betas so that 4 trailing DDIM steps work).

Launch (one machine, CPU or GPU; the same command scales to many GPUs/nodes with `accelerate config`):

    accelerate launch training_examples/train_yan_sim.py \
        --dataset_dir data/doom --vae_path outputs/yan-sim-vae \
        --output_dir outputs/yan-sim-doom --max_train_steps 20000 --checkpointing_steps 500

    # continue after a kill
    accelerate launch training_examples/train_yan_sim.py ... --resume_from_checkpoint latest

The final folder is a complete ``YanSimPipeline`` (``YanSimPipeline.from_pretrained(output_dir)``) with a model card.
"""

import argparse
import json
import logging
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDIMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import export_to_video
from tqdm.auto import tqdm

from diffusers_yan import AutoencoderKLYan, YanSimPipeline, YanSimUNetModel
from diffusers_yan.training_utils import (
    checkpoint_step,
    diffusion_forcing_timesteps,
    load_clip_datasets,
    parse_int_tuple,
    push_output_to_hub,
    resolve_resume_path,
    save_checkpoint,
)


logger = logging.getLogger("train_yan_sim")


def parse_args(input_args=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # data
    p.add_argument("--dataset_dir", required=True, help="dataset folder(s) written by `yan collect`, comma-separated")
    p.add_argument("--validation_dataset_dir", default=None, help="held-out dataset for validation rollouts")
    p.add_argument("--vae_path", required=True, help="a trained AutoencoderKLYan folder (stage 1)")
    p.add_argument(
        "--clip_latent_frames",
        type=int,
        default=9,
        help="latent frames per training clip (video frames = 1 + (n-1) * temporal compression); must exceed"
        " num_inference_steps so clips hold both clean context and a full shift window",
    )
    # model
    p.add_argument(
        "--unet_config", default=None, help="JSON file with a YanSimUNetModel config (overrides the flags below)"
    )
    p.add_argument("--block_out_channels", default="64,128", help="UNet channel widths per level")
    p.add_argument("--layers_per_block", type=int, default=1, help="ResNet layers per UNet level")
    p.add_argument("--attention_levels", default="1,1", help="1/0 per level: attention blocks at that level")
    p.add_argument("--attention_head_dim", type=int, default=32, help="width of each attention head")
    p.add_argument("--norm_num_groups", type=int, default=16, help="GroupNorm groups")
    p.add_argument("--action_embed_dim", type=int, default=128, help="action token width (768 in the paper)")
    p.add_argument("--temporal_cache_size", type=int, default=16, help="past frames kept in the temporal KV cache")
    p.add_argument(
        "--init_unet", default=None, help="start from this YanSimUNetModel folder instead of random weights"
    )
    # diffusion
    p.add_argument(
        "--action_dropout",
        type=float,
        default=0.0,
        help="probability that a clip's actions, from a random frame on, are replaced by the null action (trains the"
        " unconditional branch of the pipeline's action guidance)",
    )
    p.add_argument(
        "--null_action",
        default="zeros",
        choices=["zeros", "mean"],
        help="the null action stored in the UNet config: no button held, or the training data's mean action",
    )
    p.add_argument("--prediction_type", default="v_prediction", choices=["epsilon", "v_prediction", "sample"])
    p.add_argument("--num_inference_steps", type=int, default=4, help="DDIM steps (= shift window) at inference")
    p.add_argument(
        "--p_inference_pattern",
        type=float,
        default=0.5,
        help="probability that a clip gets the clean-prefix + staggered-window noise pattern of inference"
        " instead of fully independent per-frame levels",
    )
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=8)
    p.add_argument("--max_train_steps", type=int, default=10000)
    p.add_argument("--learning_rate", type=float, default=2e-4)
    p.add_argument(
        "--lr_scheduler",
        default="constant_with_warmup",
        choices=["constant_with_warmup", "cosine", "linear"],
        help="learning-rate schedule (diffusers.optimization.get_scheduler)",
    )
    p.add_argument("--lr_warmup_steps", type=int, default=200)
    p.add_argument("--adam_weight_decay", type=float, default=1e-2)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--gradient_checkpointing", action="store_true", help="trade compute for memory")
    p.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--use_ema", action="store_true", help="keep an EMA of the UNet weights and save it")
    p.add_argument("--ema_decay", type=float, default=0.999)
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    # outputs
    p.add_argument("--output_dir", required=True, help="where checkpoints and the final pipeline go")
    p.add_argument("--checkpointing_steps", type=int, default=500)
    p.add_argument("--checkpoints_total_limit", type=int, default=2)
    p.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder, or "latest"')
    p.add_argument("--validation_steps", type=int, default=1000, help="save a validation rollout every N steps")
    p.add_argument("--validation_rollout_frames", type=int, default=16, help="actions per validation rollout")
    p.add_argument("--logging_steps", type=int, default=20)
    p.add_argument("--report_to", default=None, help="tensorboard, wandb, ... (none by default)")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    p.add_argument("--hub_token", default=None)
    args = p.parse_args(input_args)
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id (e.g. your-name/yan-sim-doom)")
    if not 0.0 <= args.action_dropout < 1.0:
        p.error(f"--action_dropout must be in [0, 1), got {args.action_dropout}")
    if args.clip_latent_frames <= args.num_inference_steps:
        p.error("--clip_latent_frames must be larger than --num_inference_steps")
    for path in args.dataset_dir.split(","):
        if not os.path.isdir(path):
            p.error(f"--dataset_dir {path!r} does not exist")
    if not os.path.isfile(os.path.join(args.vae_path, "config.json")):
        p.error(f"--vae_path {args.vae_path!r} is not an AutoencoderKLYan folder (no config.json)")
    return args


def build_unet(
    args, action_space, latent_channels: int, latent_size: tuple[int, int], null_action: list[float] | None = None
) -> YanSimUNetModel:
    if args.init_unet:
        unet = YanSimUNetModel.from_pretrained(args.init_unet)
        unet.register_to_config(null_action=null_action)
        return unet
    if args.unet_config:
        with open(args.unet_config) as f:
            config = json.load(f)
        config["action_space"] = action_space.to_dict()
        config["null_action"] = null_action
        return YanSimUNetModel.from_config(config)
    channels = parse_int_tuple(args.block_out_channels, "--block_out_channels")
    levels = tuple(bool(int(v)) for v in args.attention_levels.split(","))
    if len(levels) != len(channels):
        raise ValueError("--attention_levels needs one 0/1 per entry of --block_out_channels")
    return YanSimUNetModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=channels,
        layers_per_block=args.layers_per_block,
        attention_levels=levels,
        attention_head_dim=args.attention_head_dim,
        norm_num_groups=args.norm_num_groups,
        action_space=action_space.to_dict(),
        action_embed_dim=args.action_embed_dim,
        temporal_cache_size=args.temporal_cache_size,
        null_action=null_action,
    )


def mean_action(dataset) -> list[float]:
    """The mean encoded action over every row of the (concatenated) `yan collect` datasets: the null action that
    approximates "any action" (read from the action columns, without decoding frames)."""
    rows = [np.asarray(part.dataset["action"], dtype=np.float64) for part in dataset.datasets]
    return [float(v) for v in np.concatenate(rows).mean(axis=0)]


def drop_actions(actions: torch.Tensor, null: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """With probability ``p`` per clip, replace the actions from a random latent frame on with ``null``: the pattern
    of a guided pipeline call (real actions in the past, the null action on the frames being denoised)."""
    if p <= 0:
        return actions
    b, f = actions.shape[:2]
    drop = torch.rand(b, generator=generator) < p
    start = torch.randint(1, f, (b,), generator=generator) if f > 1 else torch.zeros(b, dtype=torch.long)
    mask = drop[:, None] & (torch.arange(f)[None, :] >= start[:, None])  # [B, F]
    mask = mask.to(actions.device)[..., None]
    return torch.where(mask, null.to(actions), actions)


def latent_actions(actions: torch.Tensor, temporal_ratio: int) -> torch.Tensor:
    """Video-frame actions ``[B, F, A]`` -> one action per latent frame ``[B, 1 + (F-1)/r, A]``.

    Latent frame 0 is the start frame alone (the all-zero action, as at inference); latent frame j covers video
    frames ``1 + (j-1) r ... j r`` and takes the action that led into the first of them (the agents hold actions
    for several frames, so a group rarely mixes two).
    """
    first = torch.zeros_like(actions[:, :1])
    return torch.cat([first, actions[:, 1::temporal_ratio]], dim=1)


def per_frame_coefficients(scheduler: DDIMScheduler, timesteps: torch.Tensor, like: torch.Tensor):
    """``(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))`` per frame, shaped ``[B, 1, F, 1, 1]`` to broadcast over latents.

    Forward diffusion is ``x_t = a x_0 + s eps`` and the v-prediction target is ``v = a eps - s x_0`` (Salimans & Ho
    2022), each with its own ``t`` per frame (Diffusion Forcing).
    """
    alphas = scheduler.alphas_cumprod.to(like.device)[timesteps]  # [B, F]
    a = alphas.sqrt()[:, None, :, None, None].to(like.dtype)
    s = (1 - alphas).sqrt()[:, None, :, None, None].to(like.dtype)
    return a, s


@torch.no_grad()
def validation_rollout(pipe: YanSimPipeline, batch: dict, out_path: str, num_actions: int, seed: int) -> float:
    """Roll the model out from a real clip's first frame with its real actions; save model | ground truth side by side."""
    r = pipe.vae_scale_factor_temporal
    frames = batch["frames"][0]  # [F, 3, H, W] in [-1, 1]
    actions = latent_actions(batch["actions"][:1], r)[0, 1:]
    n = min(num_actions, actions.shape[0])
    start = ((frames[0] + 1) / 2).clamp(0, 1)
    out = pipe(image=start, actions=actions[:n], generator=torch.Generator().manual_seed(seed), output_type="np")
    gen = out.frames[0]  # [n*r, H, W, 3]
    real = ((frames[1 : 1 + gen.shape[0]] + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    real = np.concatenate([real, np.zeros_like(gen[: gen.shape[0] - real.shape[0]])], axis=0)
    mse = float(((gen[: len(real)] - real) ** 2).mean())
    export_to_video([np.concatenate([g, t], axis=1) for g, t in zip(gen, real)], out_path, fps=15)
    return -10 * math.log10(max(mse, 1e-10))


def write_model_card(args, output_dir: str, pipe: YanSimPipeline, train_info: dict) -> None:
    from diffusers.utils.hub_utils import MODEL_CARD_TEMPLATE_PATH, populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    space = pipe.action_space
    h, w = pipe.resolution
    description = f"""
# Yan-Sim world model trained with `train_yan_sim.py`

An action-conditioned, real-time world simulator (Yan-Sim: causal VAE + action-cross-attention UNet with causal
temporal attention, shift-window DDIM sampling with {args.num_inference_steps} steps), trained with Diffusion
Forcing on gameplay from `{os.path.abspath(args.dataset_dir)}`.

- Resolution: {w}x{h}, {pipe.frames_per_action} frames per action
- Actions ({space.dim}): {", ".join(space.names)}
- Training: {train_info["steps"]} steps, batch {args.train_batch_size}, lr {args.learning_rate}, prediction
  `{args.prediction_type}`, final loss {train_info["final_loss"]:.4f}

```py
import torch
from diffusers_yan import YanSimPipeline

pipe = YanSimPipeline.from_pretrained("{args.hub_model_id or output_dir}")
out = pipe(image=start_frame, actions=["MOVE_FORWARD"] * 8, generator=torch.Generator().manual_seed(0))
```
"""
    # the card diffusers' `load_or_create_model_card(from_training=True)` makes, built locally: that helper first
    # looks the repo up on the Hub, which an offline run or a local-only output folder cannot do
    card = ModelCard.from_template(
        card_data=ModelCardData(license="apache-2.0", library_name="diffusers", pipeline_tag="image-to-video"),
        template_path=MODEL_CARD_TEMPLATE_PATH,
        model_description=description,
    )
    card = populate_model_card(card, tags=["diffusers", "diffusers-yan", "world-model", "yan-sim", "video"])
    card.save(os.path.join(output_dir, "README.md"))


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
    # 1. frozen VAE and the data
    vae = AutoencoderKLYan.from_pretrained(args.vae_path)
    vae.requires_grad_(False).eval()
    r = vae.config.temporal_compression_ratio
    clip_frames = 1 + (args.clip_latent_frames - 1) * r
    dataset = load_clip_datasets(args.dataset_dir, clip_frames)
    sample = dataset[0]
    height, width = sample["frames"].shape[-2:]
    ratio = vae.config.spatial_compression_ratio
    if height % ratio or width % ratio:
        raise ValueError(f"Dataset frames {width}x{height} are not divisible by the VAE's spatial ratio {ratio}.")
    latent_size = (height // ratio, width // ratio)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
    )

    # 2. UNet, scheduler, optimizer
    null_action = mean_action(dataset) if args.null_action == "mean" else None
    unet = build_unet(args, dataset.action_space, vae.config.latent_channels, latent_size, null_action)
    null_vector = unet.null_action_vector()
    if null_action is not None:
        logger.info(f"null action (training data mean): {dict(zip(dataset.action_space.names, null_action))}")
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        prediction_type=args.prediction_type,
        timestep_spacing="trailing",  # few-step sampling starts from the last (pure-noise) training timestep
        rescale_betas_zero_snr=True,  # so t=999 really is pure noise (Lin et al. 2024)
        clip_sample=False,
        set_alpha_to_one=True,
    )
    inference = DDIMScheduler.from_config(scheduler.config)
    inference.set_timesteps(args.num_inference_steps)
    inference_timesteps = inference.timesteps.tolist()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps
    )
    ema = (
        EMAModel(unet.parameters(), decay=args.ema_decay, model_cls=YanSimUNetModel, model_config=unet.config)
        if args.use_ema
        else None
    )
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    vae.to(accelerator.device)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    if accelerator.is_main_process and args.report_to:
        accelerator.init_trackers("train_yan_sim", config={k: v for k, v in vars(args).items() if v is not None})

    # 3. resume
    global_step = 0
    resume = resolve_resume_path(args.output_dir, args.resume_from_checkpoint)
    if resume:
        accelerator.load_state(resume)
        global_step = checkpoint_step(resume)
        logger.info(f"resumed from {resume} at step {global_step}")
    elif args.resume_from_checkpoint:
        logger.info("no checkpoint to resume from: starting fresh")

    # 4. the loop
    gen = torch.Generator().manual_seed(args.seed + global_step)
    progress = tqdm(total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process)
    progress.set_description("train_yan_sim")
    losses, t0, loss_value = [], time.time(), float("nan")
    while global_step < args.max_train_steps:
        for batch in loader:
            with accelerator.accumulate(unet):
                with torch.no_grad():
                    video = batch["frames"].to(accelerator.device).permute(0, 2, 1, 3, 4)  # [B, 3, F, H, W]
                    z = vae.encode(video.to(vae.dtype)).latent_dist.sample()
                    z = (z - vae.config.shift_factor) * vae.config.scaling_factor
                    actions = latent_actions(batch["actions"].to(accelerator.device), r)
                    actions = drop_actions(actions, null_vector, args.action_dropout, gen)
                b, _, f = z.shape[:3]
                t = diffusion_forcing_timesteps(
                    b, f, scheduler.config.num_train_timesteps, inference_timesteps, args.p_inference_pattern, gen
                ).to(accelerator.device)
                noise = torch.randn(z.shape, generator=gen).to(z)
                a, s = per_frame_coefficients(scheduler, t, z)
                noisy = a * z + s * noise
                if args.prediction_type == "v_prediction":
                    target = a * noise - s * z
                elif args.prediction_type == "epsilon":
                    target = noise
                else:
                    target = z
                pred = unet(noisy, t, actions=actions).sample
                # frames at t == 0 are clean context: nothing to predict there
                mask = (t > 0).to(pred.dtype)[:, None, :, None, None]
                loss = (F.mse_loss(pred.float(), target.float(), reduction="none") * mask).sum() / (
                    mask.sum() * pred[:, :, :1].numel() / b
                ).clamp(min=1)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            if ema is not None:
                ema.step(unet.parameters())
            losses.append(loss.detach().item())
            progress.update(1)
            if global_step % args.logging_steps == 0:
                loss_value = float(np.mean(losses))
                losses = []
                logs = {
                    "loss": loss_value,
                    "lr": lr_scheduler.get_last_lr()[0],
                    "steps_per_s": args.logging_steps / (time.time() - t0),
                }
                t0 = time.time()
                progress.set_postfix(loss=f"{loss_value:.4f}")
                accelerator.log(logs, step=global_step)
            if global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
            if accelerator.is_main_process and args.validation_steps and global_step % args.validation_steps == 0:
                pipe = YanSimPipeline(vae=vae, unet=accelerator.unwrap_model(unet).eval(), scheduler=scheduler)
                pipe.set_progress_bar_config(disable=True)
                psnr = validation_rollout(
                    pipe,
                    next(iter(loader)),
                    os.path.join(args.output_dir, f"validation-{global_step}.mp4"),
                    args.validation_rollout_frames,
                    args.seed,
                )
                accelerator.unwrap_model(unet).train()
                logger.info(f"step {global_step}: validation rollout PSNR {psnr:.2f} dB (model left, real right)")
                accelerator.log({"val_rollout_psnr": psnr}, step=global_step)
            if global_step >= args.max_train_steps:
                break

    # 5. save the pipeline (EMA weights when kept) and a model card
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(final_unet.parameters())
        pipe = YanSimPipeline(vae=vae, unet=final_unet.eval(), scheduler=scheduler)
        pipe.save_pretrained(args.output_dir)
        if not np.isfinite(loss_value) and losses:
            loss_value = float(np.mean(losses))
        write_model_card(args, args.output_dir, pipe, {"steps": global_step, "final_loss": loss_value})
        if args.push_to_hub:
            push_output_to_hub(args.output_dir, args.hub_model_id, args.hub_token)
        logger.info(f"saved YanSimPipeline to {args.output_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
