"""Rescore recorded trajectories with a reward file, confined exactly as in training, and see how it ranks them.

    python rescore.py runs/rollout__libero_goal__task8__1__*/group.npz       # with the file that made them
    python rescore.py runs/<tgrpo run>/groups --reward-file my_reward.py     # with another one

A recording is a group as rollout.py saves it (always), tgrpo.py does with --save-groups or evaluate.py with
--save-episodes (one episode each, scored by no reward file: give one with --reward-file): the `info` of each
trajectory and the `state` of every step, what the reward file saw (format: README, "Rescoring"). Per task it
prints how the file's return ranks the successful trajectories against the failed ones, and how TGRPO's
advantages would change against the recorded rewards. With the file that made a recording, every reward comes
out bit for bit as recorded.
"""

import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import tyro

import recordings
import rewards
import rollout
import tgrpo
from cli import UsageError, check_flags
from rewards import RewardFileError, hacking


@dataclass
class Args:
    recordings: tyro.conf.Positional[tuple[str, ...]] = ()
    """group files (.npz) that rollout.py, tgrpo.py --save-groups or evaluate.py --save-episodes wrote, or folders"""
    reward_file: Optional[str] = None
    """rescore every recording with this file (default: the file that made each recording; evaluate.py's need one)"""
    alpha_step: float = 0.3
    """weight of the step-level advantage S in the advantages compared (paper: 0.3)"""
    alpha_traj: float = 0.7
    """weight of the trajectory-level advantage T (paper: 0.7)"""
    reward_cpu_seconds: float = rewards.DEFAULT_CPU_SECONDS
    """CPU seconds one reward call may use, as in training"""
    reward_memory_mb: int = rewards.DEFAULT_MEMORY_MB
    """address space (MB) a reward process may use above its start-up size, as in training"""


def advantage_moves(groups: list, rescored: list, args: Args) -> dict:
    """How far the rescored rewards move from the recorded ones: the largest step change, and the correlation and
    sign flips of TGRPO's fused advantages."""
    before, after = [], []
    for group, new in zip(groups, rescored):
        mask = torch.as_tensor(group.mask & ~group.failed[:, None])
        for rewards_, kept in ((group.rewards, before), (new, after)):
            fused = tgrpo.compute_advantages(torch.as_tensor(rewards_), mask, args.alpha_step, args.alpha_traj)[0]
            kept.append(fused[mask].numpy())
    before, after = np.concatenate(before), np.concatenate(after)
    moved = before.std() > 0 and after.std() > 0
    return {
        "max_reward_change": max(float(np.abs(new - g.rewards).max(initial=0.0)) for g, new in zip(groups, rescored)),
        "advantage_corr": float(np.corrcoef(before, after)[0, 1]) if moved else float("nan"),
        "advantage_sign_flips": float(np.mean(np.sign(before) != np.sign(after))),
    }


def compare(groups: list, rescored: list, args: Args) -> dict:
    """How a task's rescored rewards rank its trajectories, and how far they move from the recorded ones (undefined
    where a recording has no rewards: evaluate.py's episodes are scored by no reward file)."""
    check = hacking.ranking(*recordings.outcomes(groups, rescored))
    if any(group.reward_file is None for group in groups):
        return check | dict.fromkeys(("max_reward_change", "advantage_corr", "advantage_sign_flips"), float("nan"))
    return check | advantage_moves(groups, rescored, args)


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
            f"| {task} | {path} | {r['trajectories']} ({r['succeeded']}) | {cell(r['max_reward_change'], '.3g')} | "
            f"{cell(r['return_succeeded'], '.3f')} / {cell(r['return_failed'], '.3f')} | "
            f"{cell(r['return_success_corr'], '+.2f')} | {cell(r['top_return_success'], '.2f')} | "
            f"{cell(r['advantage_corr'], '+.3f')} | {cell(r['advantage_sign_flips'], '.1%')} |"
        )
    return "\n".join(rows)


def check_args(args: Args) -> None:
    check_flags(args, rewards.limit_problems(args.reward_cpu_seconds, args.reward_memory_mb))


def main(args: Args) -> dict:
    """{(task, reward file): comparison} over the recordings, printed as a table."""
    check_args(args)
    by_task = {}
    for path in recordings.find_recordings(args.recordings):
        group = recordings.load_recording(path)
        if group.reward_file is None and args.reward_file is None:
            raise UsageError(f"{path}: no reward file scored it (evaluate.py's episodes); pass one with --reward-file")
        reward_file = rollout.read_reward_file(group.suite, group.task_name, args.reward_file or group.reward_file)
        if args.reward_file is None and reward_file.sha256 != group.reward_sha256:
            print(f"[rescore] {reward_file.path} changed since {path} was recorded: rescoring with it as it is now")
        by_task.setdefault((group.task_name, reward_file), []).append(group)
    results = {}
    for (task, reward_file), groups in by_task.items():
        process = rewards.RewardProcess(args.reward_cpu_seconds, args.reward_memory_mb)
        try:
            rescored = [recordings.rescore_group(process, reward_file.path, reward_file.source, g) for g in groups]
        finally:
            process.close()
        results[(task, reward_file.path)] = compare(groups, rescored, args) | {"rescored": rescored}
    print(format_table(results))
    return results


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        main(cli_args)
    except (UsageError, RewardFileError) as error:
        sys.exit(f"error: {error}")
