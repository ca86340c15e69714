"""Throughput of tgrpo.py for G groups per update in one process, and for torchrun ranks.

    python benchmarks/bench_scale.py --model tiny --device cpu --num-envs 2 --max-steps 20

Each configuration runs tgrpo.py itself (under torchrun for several ranks) for --iterations iterations; the
first starts the env workers and builds the envs, so the table averages the others, read back from the run's
TensorBoard log. Prints a markdown table for the README.
"""

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    model: str = "tiny"
    """the VLA: `tiny`, a checkpoint dir or a hub id"""
    device: str = "cpu"
    """torch device of every rank (under torchrun on GPUs, each rank takes its own)"""
    num_envs: int = 2
    """N: envs per group"""
    max_steps: int = 20
    """steps per trajectory (termination independent: every env runs them all unless it succeeds)"""
    groups: tuple[int, ...] = (1, 2, 4)
    """groups per iteration to measure in one process"""
    ranks: tuple[int, ...] = (2,)
    """torchrun ranks to measure, with one group each"""
    iterations: int = 3
    """iterations per configuration; the first is a warm-up and not counted"""
    camera_size: int = 128
    """agentview render size (256 is the protocol; 128 keeps a CPU run short)"""


def run_tgrpo(args: Args, groups: int, ranks: int, output_dir: str) -> Path:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 else []
    flags = (
        f"--model {args.model} --device {args.device} --suite libero_goal --task-ids 8 9 3 0 "
        f"--num-envs {args.num_envs} --max-steps {args.max_steps} --termination independent "
        f"--camera-size {args.camera_size} --groups-per-iteration {groups} --num-iterations {args.iterations} "
        f"--reward-file {ROOT / 'tests' / 'data' / 'raise_eef.py'} --save-every 0 --video-every 0 "
        f"--output-dir {output_dir} --exp-name g{groups}r{ranks}"
    ).split()
    subprocess.run([sys.executable, *launcher, "tgrpo.py", *flags], cwd=ROOT, check=True, capture_output=True)
    return next(Path(output_dir).glob(f"*__g{groups}r{ranks}__*"))


def measured(run_dir: Path) -> dict:
    """Mean over the iterations after the first of what tgrpo.py logged (rank 0's clock)."""
    events = EventAccumulator(str(run_dir)).Reload()

    def mean(tag: str) -> float:
        values = [event.value for event in events.Scalars(tag)][1:]
        return sum(values) / len(values)

    times = {part: mean(f"time/{part}") for part in ("iteration", "simulation", "policy", "update")}
    return {**times, "samples_per_s": mean("charts/SPS")}


def main(args: Args) -> None:
    configurations = [(groups, 1) for groups in args.groups] + [(ranks, ranks) for ranks in args.ranks]
    rows = []
    with tempfile.TemporaryDirectory() as output_dir:
        for groups, ranks in configurations:
            print(f"measuring G={groups} on {ranks} rank(s) ...", file=sys.stderr, flush=True)
            rows.append((groups, ranks, measured(run_tgrpo(args, groups, ranks, output_dir))))
    base = rows[0][2]["samples_per_s"]
    print(f"\n{args.model} on {args.device}, N={args.num_envs}, {args.max_steps} steps, camera {args.camera_size} px")
    print(
        "\n| processes | G (groups per update) | envs | iteration s | samples/s | speed-up | simulation | policy | update |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for groups, ranks, m in rows:
        split = " | ".join(
            f"{m[part]:.1f} s ({m[part] / m['iteration']:.0%})" for part in ("simulation", "policy", "update")
        )
        print(
            f"| {ranks} | {groups} | {groups * args.num_envs} | {m['iteration']:.1f} | {m['samples_per_s']:.2f} | "
            f"{m['samples_per_s'] / base:.2f}x | {split} |"
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
