"""Did it learn? TGRPO on the tiny VLA with a reward for raising the end effector, on real LIBERO (CPU), over
several seeds, with the spread.

    python benchmarks/learning_signal.py                                  # trains 5 seeds, then the table
    python benchmarks/learning_signal.py --seeds 1 2 3 --num-iterations 8  # tests/test_learning.py's runs
    python benchmarks/learning_signal.py --summarize runs/<run> runs/<run> # only summarize existing runs

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

LEARNING_RATE = 0.1
MARGIN = 0.015  # metres of summed rise over the 4 steps: the untrained policy averages ~0, full speed upward ~0.05


@dataclass
class Args:
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    """one training run per seed (the seed draws the LoRA init and every sampled token)"""
    num_iterations: int = 16
    """TGRPO iterations (groups) per run"""
    block: int = 4
    """iterations per row of the table; "learned" compares the last block with the first"""
    summarize: Optional[tuple[str, ...]] = None
    """skip training and summarize these run directories"""
    output_dir: str = "runs"
    """where the runs go"""


def training_args(seed: int, num_iterations: int, output_dir: str = "runs") -> tgrpo.Args:
    """The run behind the table (and tests/test_learning.py): raise the end effector, libero_goal task 8."""
    return tgrpo.Args(
        exp_name="learning_signal",
        seed=seed,
        model="tiny",
        device="cpu",
        suite="libero_goal",
        task_ids=(8,),
        reward_file=str(ROOT / "tests" / "data" / "raise_eef.py"),
        num_envs=8,  # a group of 8 ranks the trajectories reliably enough that early large steps go the right way
        max_steps=4,
        camera_size=128,
        learning_rate=LEARNING_RATE,
        num_iterations=num_iterations,
        save_every=0,
        video_every=0,
        output_dir=output_dir,
    )


def returns_of(run_dir) -> np.ndarray:
    """The mean return of each iteration, as the run logged it."""
    return np.array([event.value for event in EventAccumulator(str(run_dir)).Reload().Scalars("charts/return_mean")])


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
    if args.summarize:
        runs = {int(Path(run_dir).name.split("__")[2]): run_dir for run_dir in args.summarize}  # <suite>__<exp>__<seed>__<time>
    else:
        runs = {s: tgrpo.main(training_args(s, args.num_iterations, args.output_dir))["run_dir"] for s in args.seeds}
    print(f"lr {LEARNING_RATE}, torch CPU kernels: {torch.backends.cpu.get_cpu_capability()}\n")
    print(summarize({seed: returns_of(run_dir) for seed, run_dir in runs.items()}, args.block))


if __name__ == "__main__":
    main(tyro.cli(Args))
