"""Did it learn? TGRPO on the tiny VLA with a reward for raising the end effector, on real LIBERO (CPU), over
several seeds, with the spread.

    python benchmarks/learning_signal.py                                  # trains 5 seeds, then the table
    python benchmarks/learning_signal.py --seeds 1 2 3 --num-iterations 8  # tests/test_learning.py's runs
    python benchmarks/learning_signal.py --summarize runs/<run> runs/<run> # only summarize existing runs
    python benchmarks/learning_signal.py --shapings dense potential sparse --seeds 1 2 3   # the shapings compared

The reward (tests/data/raise_eef.py) is the end effector's rise since the start of the episode, so the return
can only grow if the policy learns to emit "up" z-action tokens from its own sampled experience. Prints the
mean return per block of iterations for each seed, their mean and spread over the seeds, and which seeds
learned (the last block's mean return beats the first block's by MARGIN). The seed draws the LoRA init and
every sampled token, so different seeds are different runs; different CPU kernels (ATEN_CPU_CAPABILITY) round
differently and so are different runs too.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import tgrpo  # noqa: E402

LEARNING_RATE = 0.01  # at 0.1 a few large Adam steps made the policy deterministic on some seeds (README, "Results")
MARGIN = 0.015  # metres of summed rise over the 4 steps: the untrained policy averages ~0, full speed upward ~0.05


@dataclass
class Args:
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    """one training run per seed (the seed draws the LoRA init and every sampled token)"""
    num_iterations: int = 16
    """TGRPO iterations (groups) per run"""
    block: int = 4
    """iterations per row of the table; "learned" compares the last block with the first"""
    learning_rate: float = LEARNING_RATE
    """LoRA learning rate of every run"""
    shapings: tuple[str, ...] = ("dense",)
    """--reward-shaping values to train with, each on every seed; several: a table comparing them"""
    summarize: Optional[tuple[str, ...]] = None
    """skip training and summarize these run directories (one shaping)"""
    output_dir: str = "runs"
    """where the runs go"""


def training_args(
    seed: int,
    num_iterations: int,
    output_dir: str = "runs",
    shaping: str = "dense",
    learning_rate: float = LEARNING_RATE,
) -> tgrpo.Args:
    """The run behind the table (and tests/test_learning.py): raise the end effector, libero_goal task 8."""
    return tgrpo.Args(
        exp_name=f"learning_signal_{shaping}",
        reward_shaping=shaping,
        seed=seed,
        model="tiny",
        device="cpu",
        suite="libero_goal",
        task_ids=(8,),
        reward_file=str(ROOT / "tests" / "data" / "raise_eef.py"),
        num_envs=8,  # a group of 8 ranks the trajectories reliably enough that early large steps go the right way
        max_steps=4,
        camera_size=128,
        learning_rate=learning_rate,
        num_iterations=num_iterations,
        save_every=0,
        video_every=0,
        output_dir=output_dir,
    )


def returns_of(run_dir, tag: str = "charts/return_mean") -> np.ndarray:
    """The mean return of each iteration (the reward file's, whatever the shaping), as the run logged it."""
    return np.array([event.value for event in EventAccumulator(str(run_dir)).Reload().Scalars(tag)])


def iterations_to_threshold(returns: np.ndarray, block: int) -> Optional[int]:
    """The first iteration at which the last `block` iterations' mean return beats the first block's by MARGIN."""
    first = returns[:block].mean()
    ends = range(2 * block, len(returns) + 1)
    return next((end for end in ends if returns[end - block : end].mean() > first + MARGIN), None)


def compare_shapings(runs: dict, block: int) -> str:
    """Markdown table: per shaping, the iterations each seed took to reach the threshold, and the final success."""
    seeds = sorted({seed for _, seed in runs})
    rows = ["| shaping | " + " | ".join(f"seed {s}" for s in seeds) + " | learned | success, last block |"]
    rows.append("|---" * (len(seeds) + 3) + "|")
    for shaping in dict.fromkeys(shaping for shaping, _ in runs):
        reached = [iterations_to_threshold(returns_of(runs[shaping, s]), block) for s in seeds]
        success = np.mean([returns_of(runs[shaping, s], "charts/success_rate")[-block:].mean() for s in seeds])
        cells = " | ".join("-" if r is None else str(r) for r in reached)
        rows.append(f"| {shaping} | {cells} | {sum(r is not None for r in reached)}/{len(seeds)} | {success:.2f} |")
    return "\n".join(rows)


def learned(returns: np.ndarray, block: int) -> bool:
    return returns[-block:].mean() > returns[:block].mean() + MARGIN


def summarize(returns: dict, block: int) -> str:
    """Markdown table: mean return per block of iterations, one column per seed, then mean and std over seeds."""
    seeds = list(returns)
    length = min(len(r) for r in returns.values())
    rows = [
        "| iterations | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |",
        "|---" * (len(seeds) + 3) + "|",
    ]
    for start in range(0, length, block):
        means = np.array([returns[s][start : start + block].mean() for s in seeds])
        cells = " | ".join(f"{m:.3f}" for m in means)
        rows.append(f"| {start + 1}-{min(start + block, length)} | {cells} | {means.mean():.3f} | {means.std():.3f} |")
    verdicts = [learned(returns[s][:length], block) for s in seeds]
    cells = " | ".join("yes" if v else "no" for v in verdicts)
    rows.append(f"| learned | {cells} | {sum(verdicts)}/{len(seeds)} | |")
    return "\n".join(rows)


def main(args: Args) -> None:
    print(f"lr {args.learning_rate}, torch CPU kernels: {torch.backends.cpu.get_cpu_capability()}\n")
    if args.summarize:
        # A run directory is named <suite>__<exp>__<seed>__<time>.
        runs = {int(Path(run_dir).name.split("__")[2]): run_dir for run_dir in args.summarize}
        print(summarize({seed: returns_of(run_dir) for seed, run_dir in runs.items()}, args.block))
        return
    runs = {}
    for shaping in args.shapings:
        for seed in args.seeds:
            run = tgrpo.main(training_args(seed, args.num_iterations, args.output_dir, shaping, args.learning_rate))
            runs[shaping, seed] = run["run_dir"]
    for shaping in args.shapings:
        table = summarize({seed: returns_of(runs[shaping, seed]) for seed in args.seeds}, args.block)
        print(f"--reward-shaping {shaping}:\n{table}\n")
    if len(args.shapings) > 1:
        print("\nIterations until the return's block mean beats the first block's by the margin (-: never):\n")
        print(compare_shapings(runs, args.block))


if __name__ == "__main__":
    main(tyro.cli(Args))
