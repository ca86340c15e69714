"""Benchmark group collection: serial vs parallel env stepping, and batched vs per-env policy calls.

    python benchmarks/bench_rollout.py --model tiny --num-envs 4 --max-steps 50

Prints a markdown table for the README.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import libero_envs  # noqa: E402
import openvla_policy  # noqa: E402
import rollout  # noqa: E402


@dataclass
class Args:
    suite: str = "libero_goal"
    """LIBERO suite"""
    task_id: int = 8
    """task index within the suite"""
    num_envs: int = 4
    """N envs in the group"""
    max_steps: int = 50
    """steps per trajectory (termination independent, so every env runs them all unless it succeeds)"""
    model: str = "tiny"
    """checkpoint dir, hub id or `tiny`"""
    repeats: int = 20
    """policy calls timed per variant"""
    seed: int = 0
    """torch seed"""


def collect(policy, pool, args, reward_file) -> rollout.Group:
    return rollout.collect_group(
        policy,
        pool,
        suite=args.suite,
        task_id=args.task_id,
        init_state_id=0,
        reward_file=reward_file,
        max_steps=args.max_steps,
        termination="independent",
    )


def time_policy_calls(policy, images: np.ndarray, instruction: str, repeats: int) -> tuple:
    """Seconds per control step for one batched call vs one call per env."""
    policy.act(images, instruction)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        policy.act(images, instruction)
    batched = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        for image in images:
            policy.act(image[None], instruction)
    per_env = (time.perf_counter() - start) / repeats
    return batched, per_env


def row(name: str, group: rollout.Group) -> str:
    steps = int(group.mask.sum())
    total = group.timing["total"]
    split = " | ".join(f"{group.timing[k] / total:.1%}" for k in ("simulation", "policy", "other"))
    return f"| {name} | {steps} | {total:.1f} | {steps / total:.1f} | {split} |"


def main(args: Args) -> None:
    torch.manual_seed(args.seed)
    task = libero_envs.get_task(args.suite, args.task_id)
    reward_file = rollout.read_reward_file(args.suite, task.name)
    policy = openvla_policy.load_vla(args.model, args.suite)
    lines = [
        f"Group collection, {args.suite} task {args.task_id}, N={args.num_envs}, {args.max_steps} steps, "
        f"model {args.model}, {torch.get_num_threads()} torch threads",
        "",
        "| stepping | env steps | wall s | steps/s | simulation and reward | policy | other |",
        "|---|---|---|---|---|---|---|",
    ]
    groups = {}
    for name, parallel in (("serial (one process)", False), ("parallel workers", True)):
        pool = libero_envs.EnvPool(args.num_envs, openvla_policy.preprocess_image, parallel=parallel)
        try:
            collect(policy, pool, args, reward_file)  # warm-up: builds the envs and renderers
            groups[name] = collect(policy, pool, args, reward_file)
        finally:
            pool.close()
        lines.append(row(name, groups[name]))
    serial, parallel = (g.mask.sum() / g.timing["total"] for g in groups.values())
    lines += ["", f"parallel / serial throughput: {parallel / serial:.2f}x", ""]

    images = groups["parallel workers"].images[:, 0]
    batched, per_env = time_policy_calls(policy, images, task.language, args.repeats)
    lines += [
        "| policy call per control step | ms |",
        "|---|---|",
        f"| one batched call for {args.num_envs} envs | {batched * 1e3:.1f} |",
        f"| {args.num_envs} per-env calls | {per_env * 1e3:.1f} |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
