"""Did it learn? TGRPO on the tiny VLA with a reward for raising the end effector, on real LIBERO (CPU).

    python benchmarks/learning_signal.py                       # trains, then summarizes (about 5-10 min on 2 cores)
    python benchmarks/learning_signal.py --summarize runs/<run> # only summarize an existing run

The reward (tests/data/raise_eef.py) is the end effector's rise since the start of the episode, so the
return can only grow if the policy learns to emit "up" z-action tokens from its own sampled experience.
Prints the mean return per block of iterations as a markdown table.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import tgrpo  # noqa: E402


@dataclass
class Args:
    num_iterations: int = 20
    """TGRPO iterations (groups)"""
    learning_rate: float = 1e-1
    """LoRA learning rate; the tiny random VLA needs far more than the paper's 1e-5 for the 7B SFT model"""
    block: int = 5
    """iterations per row of the summary table"""
    summarize: Optional[str] = None
    """skip training and summarize this run directory"""


def summarize(run_dir: str, block: int) -> str:
    events = EventAccumulator(run_dir).Reload()
    returns = np.array([e.value for e in events.Scalars("charts/return_mean")])
    rows = ["| iterations | mean return |", "|---|---|"]
    for start in range(0, len(returns), block):
        rows.append(f"| {start + 1}-{min(start + block, len(returns))} | {returns[start : start + block].mean():.3f} |")
    return "\n".join(rows)


def training_args(num_iterations: int, learning_rate: float, output_dir: str = "runs") -> tgrpo.Args:
    """The run behind the table (and, shorter, tests/test_learning.py): raise the end effector, task 8."""
    return tgrpo.Args(
        exp_name="learning_signal",
        seed=2,  # seed 1 collapses at this lr (README, "Results")
        model="tiny",
        device="cpu",
        suite="libero_goal",
        task_ids=(8,),
        reward_file=str(ROOT / "tests" / "data" / "raise_eef.py"),
        num_envs=4,
        max_steps=8,
        camera_size=128,
        learning_rate=learning_rate,
        num_iterations=num_iterations,
        save_every=0,
        video_every=0,
        output_dir=output_dir,
    )


def main(args: Args) -> None:
    run_dir = args.summarize
    if run_dir is None:
        run_dir = str(tgrpo.main(training_args(args.num_iterations, args.learning_rate))["run_dir"])
    print(summarize(run_dir, args.block))


if __name__ == "__main__":
    main(tyro.cli(Args))
