"""Rescore recorded trajectories with a reward file, confined exactly as in training, and see how it ranks them.

    python rescore.py runs/rollout__libero_goal__task8__1__*/group.npz       # with the file that made them
    python rescore.py runs/<tgrpo run>/groups --reward-file my_reward.py     # with another one

A recording is a group as rollout.py saves it (always) or tgrpo.py does with --save-groups: the `info` of each
trajectory and the `state` of every step, what the reward file saw (format: README, "Rescoring"). Per task it
prints how the file's return ranks the successful trajectories against the failed ones, and how TGRPO's
advantages would change against the recorded rewards. With the file that made a recording, every reward comes
out bit for bit as recorded.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import tyro

import rewards
import rollout
import tgrpo
from cli import UsageError, check_flags
from rewards import RewardFileError, hacking


@dataclass
class Args:
    recordings: tyro.conf.Positional[tuple[str, ...]] = ()
    """group files (.npz) that rollout.py or tgrpo.py --save-groups wrote, or folders holding them"""
    reward_file: Optional[str] = None
    """rescore every recording with this file (default: the file that made each recording)"""
    alpha_step: float = 0.3
    """weight of the step-level advantage S in the advantages compared (paper: 0.3)"""
    alpha_traj: float = 0.7
    """weight of the trajectory-level advantage T (paper: 0.7)"""
    reward_cpu_seconds: float = rewards.DEFAULT_CPU_SECONDS
    """CPU seconds one reward call may use, as in training"""
    reward_memory_mb: int = rewards.DEFAULT_MEMORY_MB
    """address space (MB) a reward process may use above its start-up size, as in training"""


def find_recordings(paths: tuple) -> list:
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        files += sorted(path.rglob("*.npz")) if path.is_dir() else [path]
    if not files:
        given = " ".join(paths) or "no recording given"
        raise UsageError(f"{given}: no recorded group (.npz) there; give group files or folders holding them")
    return files


def rescore_group(process: rewards.RewardProcess, reward_file: rollout.RewardFile, group: rollout.Group) -> np.ndarray:
    """The group's step rewards (N, T) under `reward_file`, in `process`, with the recorded infos and states."""
    scored = np.zeros_like(group.rewards)
    for i, (info, states) in enumerate(zip(group.reward_infos, group.reward_states)):
        if info is None or group.failed[i]:
            continue  # a crashed env: left out of the update, as in training
        process.load(reward_file.path, reward_file.source, info)
        for t, state in enumerate(states):
            scored[i, t] = process.call(state, env_index=i)
    return scored


def compare(groups: list, recorded: list, rescored: list, args: Args) -> dict:
    """How a task's rescored rewards rank its trajectories, and how far the advantages move from the recorded ones."""
    valid = [~group.failed for group in groups]
    returns = np.concatenate([(r * g.mask).sum(1)[v] for r, g, v in zip(rescored, groups, valid)])
    success = np.concatenate([g.success[v] for g, v in zip(groups, valid)])
    check = hacking.reward_check([(returns, success)])
    before, after = [], []
    for group, old, new in zip(groups, recorded, rescored):
        mask = torch.as_tensor(group.mask & ~group.failed[:, None])
        for rewards_, kept in ((old, before), (new, after)):
            fused = tgrpo.compute_advantages(torch.as_tensor(rewards_), mask, args.alpha_step, args.alpha_traj)[0]
            kept.append(fused[mask].numpy())
    before, after = np.concatenate(before), np.concatenate(after)
    moved = before.std() > 0 and after.std() > 0
    return {
        "trajectories": len(success),
        "succeeded": int(success.sum()),
        "max_reward_change": max(float(np.abs(new - old).max(initial=0.0)) for old, new in zip(recorded, rescored)),
        "return_succeeded": returns[success].mean() if success.any() else float("nan"),
        "return_failed": returns[~success].mean() if (~success).any() else float("nan"),
        "return_success_corr": check.get("return_success_corr", float("nan")),
        "top_return_success": check["top_return_success"],
        "advantage_corr": float(np.corrcoef(before, after)[0, 1]) if moved else float("nan"),
        "advantage_sign_flips": float(np.mean(np.sign(before) != np.sign(after))),
    }


def format_table(results: dict) -> str:
    rows = [
        "| task | reward file | trajectories (succeeded) | max reward change | return: succeeded / failed | rank corr "
        "return-success | top-quarter success | advantage corr | advantage sign flips |",
        "|---" * 9 + "|",
    ]
    def cell(value: float, spec: str) -> str:  # undefined (no success, or no failure): a dash
        return "-" if np.isnan(value) else format(value, spec)

    for (task, path), r in results.items():
        rows.append(
            f"| {task} | {path} | {r['trajectories']} ({r['succeeded']}) | {r['max_reward_change']:.3g} | "
            f"{cell(r['return_succeeded'], '.3f')} / {cell(r['return_failed'], '.3f')} | "
            f"{cell(r['return_success_corr'], '+.2f')} | {r['top_return_success']:.2f} | "
            f"{cell(r['advantage_corr'], '+.3f')} | {r['advantage_sign_flips']:.1%} |"
        )
    return "\n".join(rows)


def check_args(args: Args) -> None:
    check_flags(args, rewards.limit_problems(args.reward_cpu_seconds, args.reward_memory_mb))


def main(args: Args) -> dict:
    """{(task, reward file): comparison} over the recordings, printed as a table."""
    check_args(args)
    by_task = {}
    for path in find_recordings(args.recordings):
        group = rollout.load_group(path)
        if not group.reward_states:
            raise UsageError(f"{path}: recorded before groups kept their reward states; record it again")
        reward_file = rollout.read_reward_file(group.suite, group.task_name, args.reward_file or group.reward_file)
        if args.reward_file is None and reward_file.sha256 != group.reward_sha256:
            print(f"[rescore] {reward_file.path} changed since {path} was recorded: rescoring with it as it is now")
        by_task.setdefault((group.task_name, reward_file), []).append(group)
    results = {}
    for (task, reward_file), groups in by_task.items():
        process = rewards.RewardProcess(args.reward_cpu_seconds, args.reward_memory_mb)
        try:
            rescored = [rescore_group(process, reward_file, group) for group in groups]
        finally:
            process.close()
        recorded = [group.rewards for group in groups]
        results[(task, reward_file.path)] = compare(groups, recorded, rescored, args) | {"rescored": rescored}
    print(format_table(results))
    return results


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        main(cli_args)
    except (UsageError, RewardFileError) as error:
        sys.exit(f"error: {error}")
