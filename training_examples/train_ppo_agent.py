"""Train the PPO data-collection agent (stable-baselines3) on a ViZDoom scenario, then compare it with the random agent.

The policy sees an 80x60 grayscale frame and picks one of `PPO_ACTIONS` (forward, forward+turn, turn, back,
attack, use). Its reward is the scenario's reward plus a bonus for each map cell (64 map units) entered for the first
time in the episode, so it learns to go places: that is the "depth" the collected data needs. After training it
plays `--eval-episodes` episodes next to the random agent (same seeds, same step limit) and reports both agents'
scenario return and map coverage (distinct cells visited).

Launch (a few minutes on a CPU):

```bash
python training_examples/train_ppo_agent.py --scenario my_way_home --timesteps 20000 --out ppo_doom.zip \
    --report benchmarks/results/ppo_vs_random.md
yan collect --scenario my_way_home --agent ppo --ppo-model ppo_doom.zip --episodes 10 --out doom_ppo
```

A killed run continues from `--out` when started again with `--resume` (the policy zip is written atomically
every `--save-every` steps).
"""

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import time

import numpy as np


logger = logging.getLogger("train_ppo_agent")


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(
        description="Train the PPO data-collection agent and compare it with random play."
    )
    parser.add_argument("--scenario", default="my_way_home", help="vizdoom scenario to train on")
    parser.add_argument("--map", default=None, help="map for full-game scenarios (freedoom2: MAP01..)")
    parser.add_argument("--timesteps", type=int, default=20000, help="environment steps of PPO training")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop training after this many minutes")
    parser.add_argument("--max-steps", type=int, default=300, help="steps per episode (frame skip 4 -> ~34 s of play)")
    parser.add_argument("--frame-skip", type=int, default=4, help="engine tics per agent step")
    parser.add_argument("--coverage-bonus", type=float, default=0.05, help="reward per newly visited 64-unit cell")
    parser.add_argument("--n-steps", type=int, default=256, help="PPO rollout length per update")
    parser.add_argument("--batch-size", type=int, default=64, help="PPO minibatch size")
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="Adam learning rate")
    parser.add_argument("--ent-coef", type=float, default=0.01, help="entropy bonus (keeps the policy exploring)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--eval-episodes", type=int, default=8, help="episodes per agent in the comparison")
    parser.add_argument("--save-every", type=int, default=5000, help="steps between atomic checkpoints of --out")
    parser.add_argument("--resume", action="store_true", help="continue training the policy in --out")
    parser.add_argument(
        "--eval-only", action="store_true", help="skip training; compare the policy in --out with random"
    )
    parser.add_argument("--out", default="ppo_doom.zip", help="where to save the policy zip")
    parser.add_argument("--report", default=None, help="markdown file to append the PPO vs random numbers to")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    return parser.parse_args(input_args)


def evaluate(agent, env, episodes: int, seed: int) -> dict:
    """Scenario return and coverage (distinct 64-unit cells visited) per episode."""
    from diffusers_yan.data.agents import cell_of
    from diffusers_yan.data.collector import episode_seeds

    returns, coverage = [], []
    for e in range(episodes):
        env_seed, agent_seed = episode_seeds(seed, e)
        agent.reset(agent_seed)
        frame = env.reset(env_seed)
        cells = {cell_of(frame.state)}
        while frame is not None:
            frame = env.step(agent.act(frame))
            if frame is not None:
                cells.add(cell_of(frame.state))
        returns.append(env.total_reward)
        coverage.append(len(cells))
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "coverage_mean": float(np.mean(coverage)),
        "coverage_std": float(np.std(coverage)),
        "returns": returns,
        "coverage": coverage,
    }


def main(args):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    from diffusers_yan.data.agents import DoomGymEnv, ExploreAgent, PPOAgent, RandomAgent
    from diffusers_yan.data.env import DoomEnv, DoomEnvConfig

    torch.set_num_threads(args.threads)
    config = DoomEnvConfig(
        scenario=args.scenario, map=args.map, resolution=(80, 60), frame_skip=args.frame_skip, max_steps=args.max_steps
    )
    env = DoomGymEnv(config, coverage_bonus=args.coverage_bonus, seed=args.seed)

    def save_atomic(model):
        tmp = args.out + ".tmp.zip"
        model.save(tmp)
        os.replace(tmp, args.out)

    if args.eval_only:
        if not os.path.exists(args.out):
            raise FileNotFoundError(f"`--out`: no policy at {args.out!r} to evaluate.")
        model = PPO.load(args.out, device="cpu")
    elif args.resume and os.path.exists(args.out):
        model = PPO.load(args.out, env=env, device="cpu")
        logger.info("resumed from %s at %d steps", args.out, model.num_timesteps)
    else:
        model = PPO(
            "CnnPolicy",
            env,
            n_steps=args.n_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            ent_coef=args.ent_coef,
            seed=args.seed,
            device="cpu",
            verbose=0,
        )

    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else None

    class Progress(BaseCallback):
        def __init__(self):
            super().__init__()
            self.episodes, self.last_save = [], 0

        def _on_step(self):
            for info, done in zip(self.locals["infos"], self.locals["dones"]):
                if done:
                    self.episodes.append((info["scenario_return"], info["coverage"]))
            if self.num_timesteps - self.last_save >= args.save_every:
                save_atomic(self.model)
                self.last_save = self.num_timesteps
                recent = self.episodes[-10:]
                if recent:
                    logger.info(
                        "step %d: last %d episodes return %.3f coverage %.1f",
                        self.num_timesteps,
                        len(recent),
                        np.mean([r for r, _ in recent]),
                        np.mean([c for _, c in recent]),
                    )
            return deadline is None or time.time() < deadline

    t0 = time.time()
    if not args.eval_only:
        model.learn(total_timesteps=args.timesteps, callback=Progress(), reset_num_timesteps=not args.resume)
        save_atomic(model)
    train_s = time.time() - t0
    steps = int(model.num_timesteps)
    logger.info("policy has %d training steps (%.0f s in this run); saved %s", steps, train_s, args.out)
    env.close()

    eval_env = DoomEnv(config)
    eval_seed = 10_000 + args.seed  # episodes not seen in training
    ppo = evaluate(PPOAgent(args.out), eval_env, args.eval_episodes, eval_seed)
    rnd = evaluate(RandomAgent(), eval_env, args.eval_episodes, eval_seed)
    exp = evaluate(ExploreAgent(), eval_env, args.eval_episodes, eval_seed)  # the scripted reference
    eval_env.close()
    result = {"scenario": args.scenario, "timesteps": steps, "train_seconds": train_s, "ppo": ppo, "random": rnd}
    result["explore"] = exp
    logger.info("PPO vs random: %s", json.dumps({k: v for k, v in result.items() if k in ("scenario", "timesteps")}))
    for name, r in (("ppo", ppo), ("random", rnd), ("explore", exp)):
        logger.info(
            "%s: return %.3f +- %.3f, coverage %.1f +- %.1f cells",
            name,
            r["return_mean"],
            r["return_std"],
            r["coverage_mean"],
            r["coverage_std"],
        )
    if args.report:
        cmd = "python training_examples/train_ppo_agent.py " + " ".join(sys.argv[1:])
        with open(args.report, "a") as f:
            f.write(
                f"\n## PPO vs random on `{args.scenario}` ({datetime.date.today()})\n\n"
                f"Command: `{cmd}`  \nMachine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), torch"
                f" {torch.__version__}, {args.threads} torch thread(s), no GPU. Policy: {steps} PPO steps"
                f"{' (trained by an earlier run)' if args.eval_only else f', trained in {train_s:.0f} s'}.\n"
                f"Evaluation: {args.eval_episodes} episodes per agent, same seeds, {args.max_steps} steps max,"
                f" frame skip {args.frame_skip}; coverage = distinct 64x64-unit map cells visited.\n\n"
                "| agent | scenario return (mean +- std) | coverage cells (mean +- std) |\n| --- | --- | --- |\n"
                f"| PPO | {ppo['return_mean']:.3f} +- {ppo['return_std']:.3f} | {ppo['coverage_mean']:.1f} +- {ppo['coverage_std']:.1f} |\n"
                f"| random | {rnd['return_mean']:.3f} +- {rnd['return_std']:.3f} | {rnd['coverage_mean']:.1f} +- {rnd['coverage_std']:.1f} |\n"
                f"| explore (scripted) | {exp['return_mean']:.3f} +- {exp['return_std']:.3f} | {exp['coverage_mean']:.1f} +- {exp['coverage_std']:.1f} |\n"
            )
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_args())
