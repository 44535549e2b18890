#!/usr/bin/env python
"""Train the inverse-dynamics playability probe p(a_n | o_n, o_{n+1}) on real engine frame pairs.

Seed slides, "A Note on Evaluation": "train a separate model to predict p(a_n | o_n, o_{n+1}), and then use this
to measure the compatibility of frames and actions". Every pair of consecutive frames of a `yan collect` dataset
(never across an episode or segment boundary) is one example; the label is the buttons held between the two frames
(the dataset's row ``n+1`` action). The model is multi-label, one logit per button, with binary cross-entropy.
``yan evaluate --idm OUTPUT_DIR`` then compares its accuracy on real and on generated pairs.

Launch (one machine, CPU or GPU; the same command scales with `accelerate config`):

    accelerate launch training_examples/train_inverse_dynamics.py \
        --dataset_dir data/doom --output_dir outputs/yan-idm-doom --max_train_steps 3000

    # continue after a kill
    accelerate launch training_examples/train_inverse_dynamics.py ... --resume_from_checkpoint latest

The held-out accuracy (whole episodes kept out of training, or ``--validation_dataset_dir``) is logged at the end
and written to ``OUTPUT_DIR/heldout_accuracy.json``; the model loads with
``YanInverseDynamicsModel.from_pretrained(OUTPUT_DIR)``.
"""

import argparse
import json
import logging
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from diffusers_yan.evaluation.inverse_dynamics import (
    YanInverseDynamicsModel,
    button_labels,
    idm_accuracy,
    majority_accuracy,
)
from diffusers_yan.training_utils import (
    checkpoint_step,
    load_clip_datasets,
    parse_int_tuple,
    resolve_resume_path,
    save_checkpoint,
)


logger = logging.getLogger("train_inverse_dynamics")


def parse_args(input_args=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # data
    p.add_argument("--dataset_dir", required=True, help="dataset folder(s) written by `yan collect`, comma-separated")
    p.add_argument(
        "--validation_dataset_dir",
        default=None,
        help="held-out dataset folder(s) for the final accuracy; default: hold out whole episodes of --dataset_dir",
    )
    p.add_argument(
        "--validation_fraction",
        type=float,
        default=0.1,
        help="without --validation_dataset_dir, the fraction of episodes (at least one) kept out of training",
    )
    # model
    p.add_argument("--block_out_channels", default="32,64,96,128", help="widths of the stride-2 conv stages")
    p.add_argument("--norm_num_groups", type=int, default=8, help="GroupNorm groups (divides every width)")
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=32, help="frame pairs per step")
    p.add_argument("--max_train_steps", type=int, default=3000, help="optimizer steps in total")
    p.add_argument("--learning_rate", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--adam_weight_decay", type=float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm")
    p.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="autocast precision")
    p.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the shuffling and the weights")
    # outputs
    p.add_argument("--output_dir", required=True, help="where checkpoints and the final model go")
    p.add_argument("--checkpointing_steps", type=int, default=500, help="save a resumable checkpoint every N steps")
    p.add_argument("--checkpoints_total_limit", type=int, default=2, help="keep only the newest N checkpoints")
    p.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder, or "latest"')
    p.add_argument("--logging_steps", type=int, default=20, help="log the mean loss every N steps")
    p.add_argument("--report_to", default=None, help="tensorboard, wandb, ... (none by default)")
    args = p.parse_args(input_args)
    for arg, paths in (("--dataset_dir", args.dataset_dir), ("--validation_dataset_dir", args.validation_dataset_dir)):
        for path in (paths or "").split(","):
            if path.strip() and not os.path.isdir(path.strip()):
                p.error(f"{arg} {path!r} does not exist")
    if not 0 < args.validation_fraction < 1:
        p.error(f"--validation_fraction must be in (0, 1), got {args.validation_fraction}")
    return args


def load_pairs(dataset_dirs: str, arg: str) -> torch.utils.data.ConcatDataset:
    """Every pair of consecutive frames (2-frame clips at stride 1) of one or more `yan collect` folders."""
    return load_clip_datasets(dataset_dirs, clip_length=2, arg=arg, stride=1, what="pair of consecutive frames")


def split_by_episode(dataset, fraction: float, seed: int):
    """Hold out whole episodes (neighbouring frames are near-duplicates: a frame-level split would leak).

    ``dataset`` is a ``ConcatDataset`` of ``GameplayClipDataset`` parts; episodes are drawn in each part.
    """
    rng = np.random.default_rng(seed)
    train, held, offset = [], [], 0
    for part in dataset.datasets:
        episode_ids = np.asarray(part.dataset["episode_id"])[part.starts] if len(part) else np.zeros(0, int)
        episodes = np.unique(episode_ids)
        n_held = max(1, int(round(fraction * len(episodes)))) if len(episodes) > 1 else 0
        held_eps = set(rng.choice(episodes, size=n_held, replace=False).tolist()) if n_held else set()
        for i, e in enumerate(episode_ids):
            (held if int(e) in held_eps else train).append(offset + i)
        offset += len(part)
    return torch.utils.data.Subset(dataset, train), torch.utils.data.Subset(dataset, held)


def pair_batch(batch: dict, action_space) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of 2-frame clips -> ``(before, after, labels)``; the label is the action that led to ``after``."""
    frames = batch["frames"]  # [B, 2, 3, H, W] in [-1, 1]
    return frames[:, 0], frames[:, 1], button_labels(batch["actions"][:, 1], action_space)


@torch.no_grad()
def heldout_accuracy(model, loader, action_space, device) -> dict:
    model.eval()
    preds, labels = [], []
    for batch in loader:
        before, after, y = pair_batch(batch, action_space)
        preds.append(model.predict(before.to(device), after.to(device)))
        labels.append(y)
    model.train()
    if not labels:
        return {"exact_match": None, "num_pairs": 0}
    preds, labels = torch.cat(preds), torch.cat(labels)
    out = idm_accuracy(preds, labels, action_space.buttons)
    out["majority_guess_exact_match"] = majority_accuracy(labels)
    return out


def main(args):
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
    )
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    # 1. frame pairs: 2-frame clips at stride 1, so every consecutive pair inside an unbroken run
    dataset = load_pairs(args.dataset_dir, "--dataset_dir")
    space = dataset.action_space
    if args.validation_dataset_dir:
        train_set, held_set = dataset, load_pairs(args.validation_dataset_dir, "--validation_dataset_dir")
        if tuple(held_set.action_space.names) != tuple(space.names):
            raise ValueError("--validation_dataset_dir has another action space than --dataset_dir.")
    else:
        train_set, held_set = split_by_episode(dataset, args.validation_fraction, args.seed)
        if len(held_set) == 0:
            logger.warning("only one episode: nothing to hold out, the final accuracy is on training pairs")
            held_set = train_set
    height, width = dataset[0]["frames"].shape[-2:]
    logger.info(f"{len(train_set)} training pairs, {len(held_set)} held-out pairs, frames {width}x{height}")
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=len(train_set) >= args.train_batch_size,
        num_workers=args.dataloader_num_workers,
    )
    held_loader = torch.utils.data.DataLoader(held_set, batch_size=64, num_workers=args.dataloader_num_workers)

    # 2. the probe and its optimizer
    model = YanInverseDynamicsModel(
        action_space=space.to_dict(),
        block_out_channels=parse_int_tuple(args.block_out_channels, "--block_out_channels"),
        norm_num_groups=args.norm_num_groups,
        sample_size=(int(height), int(width)),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if accelerator.is_main_process and args.report_to:
        accelerator.init_trackers(
            "train_inverse_dynamics", config={k: v for k, v in vars(args).items() if v is not None}
        )

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
    progress = tqdm(total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process)
    progress.set_description("train_inverse_dynamics")
    losses, t0 = [], time.time()
    while global_step < args.max_train_steps:
        for batch in loader:
            before, after, labels = pair_batch(batch, space)
            logits = model(before, after)
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device))
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            losses.append(loss.detach().item())
            progress.update(1)
            if global_step % args.logging_steps == 0:
                logs = {"loss": float(np.mean(losses)), "steps_per_s": args.logging_steps / (time.time() - t0)}
                losses, t0 = [], time.time()
                progress.set_postfix(loss=f"{logs['loss']:.4f}")
                accelerator.log(logs, step=global_step)
            if global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
            if global_step >= args.max_train_steps:
                break

    # 5. save, then the held-out accuracy
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model).eval()
        final.save_pretrained(args.output_dir)
        acc = heldout_accuracy(final, held_loader, space, accelerator.device)
        acc["steps"] = global_step
        with open(os.path.join(args.output_dir, "heldout_accuracy.json"), "w") as f:
            json.dump(acc, f, indent=2)
        logger.info(
            f"held-out accuracy on {acc['num_pairs']} real pairs: exact match {acc['exact_match']:.3f} (always"
            f" guessing the most common action: {acc['majority_guess_exact_match']:.3f}), per button"
            f" {acc['per_button_mean']:.3f}"
        )
        accelerator.log({"heldout_exact_match": acc["exact_match"]}, step=global_step)
        logger.info(f"saved YanInverseDynamicsModel to {args.output_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main(parse_args())
