"""Benchmark evaluate.py: episodes per hour for --num-envs 1, 2, 4 on the same episodes, plus an A100 estimate.

    python benchmarks/bench_evaluate.py --model tiny --num-envs 1 2 4 --trials-per-task 4 --max-steps 60

Measured part: the tiny VLA on CPU, `--task-ids` x `--trials-per-task` episodes of a suite; the tiny VLA never
succeeds, so every episode runs to the cap and all settings do exactly the same work. The worker boot
(overlapped with model loading in evaluate.py) is excluded; building each task's env is included.
Estimated part: OpenVLA-7B on one A100, our batched loop against upstream's sequential one, from the
assumptions given as flags (the arithmetic is printed). Prints markdown for the README.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import evaluate  # noqa: E402
import libero_envs  # noqa: E402
import openvla_policy  # noqa: E402


@dataclass
class Args:
    suite: str = "libero_goal"
    """LIBERO suite"""
    task_ids: tuple[int, ...] = (0, 8)
    """tasks to evaluate"""
    trials_per_task: int = 4
    """episodes per task (init states 0..trials-1)"""
    max_steps: int = 60
    """step cap per episode (every tiny-VLA episode runs to it)"""
    num_envs: tuple[int, ...] = (1, 2, 4)
    """worker counts to compare"""
    camera_size: int = 256
    """agentview render size (the protocol's 256)"""
    model: str = "tiny"
    """checkpoint dir, hub id or `tiny`"""
    a100_forward_s: float = 0.13
    """assumed OpenVLA-7B action (prefill + 6 cached decode steps) at batch 1, bf16, A100, seconds"""
    a100_extra_sample_s: float = 0.025
    """assumed extra seconds per additional sample in a batched call (prefill of ~290 tokens is compute-bound)"""
    gpu_sim_step_s: float = 0.012
    """assumed env step with EGL on the GPU: physics ~2.5 ms + render ~3 ms + preprocessing/IPC ~5 ms"""
    upstream_reset_s: float = 3.0
    """assumed upstream reset per episode: hard reset ~2.5 s + 10 wait steps"""
    our_reset_s: float = 0.4
    """assumed reset per episode here: soft reset 0.25 s + 10 wait steps (stalls the other envs meanwhile)"""
    mean_episode_steps: float = 156.0
    """assumed mean episode length on Goal: ~80% successes at ~120 steps, ~20% failures at the 300 cap"""
    a100_num_envs: tuple[int, ...] = (8, 16)
    """batch sizes to estimate"""


def measure(policy, args: Args, num_envs: int) -> dict:
    pool = libero_envs.EnvPool(num_envs, openvla_policy.preprocess_image)
    try:
        # Warm-up: boots the workers and builds the first task's env, which evaluate.py overlaps with model loading.
        task = libero_envs.get_task(args.suite, args.task_ids[0])
        horizon = libero_envs.env_horizon(args.max_steps)
        spec = libero_envs.EnvSpec(libero_envs.task_bddl_path(task), horizon, args.camera_size)
        pool.reset(list(range(num_envs)), spec, libero_envs.get_init_states(args.suite, args.task_ids[0])[0])
        start = time.perf_counter()
        result = evaluate.evaluate_suite(
            policy,
            args.suite,
            task_ids=list(args.task_ids),
            trials_per_task=args.trials_per_task,
            max_steps=args.max_steps,
            camera_size=args.camera_size,
            pool=pool,
            progress=False,
        )
        wall = time.perf_counter() - start
    finally:
        pool.close()
    steps = sum(e["length"] for e in result["episodes"])
    outcomes = [
        (e["task_id"], e["init_state_id"], e["success"], e["length"], e["fingerprint"]) for e in result["episodes"]
    ]
    return {"num_envs": num_envs, "episodes": len(outcomes), "steps": steps, "wall": wall, "outcomes": outcomes}


def measured_table(rows: list, args: Args) -> list:
    base = rows[0]
    lines = [
        f"Measured: {args.model} VLA on CPU ({torch.get_num_threads()} torch threads), {args.suite} tasks "
        f"{' '.join(map(str, args.task_ids))} x {args.trials_per_task} trials, cap {args.max_steps} steps, "
        f"camera {args.camera_size} px. Same outcomes: identical per-episode success, length and fingerprint "
        "(hash of all action tokens and the final eef/object positions) as the first row.",
        "",
        "| --num-envs | episodes | env steps | wall s | episodes/hour | env steps/s | speed-up | same outcomes |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['num_envs']} | {row['episodes']} | {row['steps']} | {row['wall']:.1f} | "
            f"{row['episodes'] / row['wall'] * 3600:.0f} | {row['steps'] / row['wall']:.1f} | "
            f"{base['wall'] / row['wall']:.2f}x | {'yes' if row['outcomes'] == base['outcomes'] else 'NO'} |"
        )
    return lines


def a100_estimate(args: Args) -> list:
    """Episodes per hour = 3600 / (mean steps x seconds per episode-step + reset seconds per episode)."""
    steps = args.mean_episode_steps
    upstream_step = args.a100_forward_s + args.gpu_sim_step_s
    upstream = 3600 / (steps * upstream_step + args.upstream_reset_s)
    lines = [
        "",
        "Estimated: OpenVLA-7B (bf16) on one A100. Assumptions: "
        f"{args.a100_forward_s * 1e3:.0f} ms per action at batch 1, +{args.a100_extra_sample_s * 1e3:.0f} ms per extra "
        f"sample in a batch, {args.gpu_sim_step_s * 1e3:.0f} ms per env step (EGL on the GPU, envs in parallel on "
        f"CPU cores), {steps:.0f} steps per episode on average (Goal), reset {args.upstream_reset_s:.1f} s upstream "
        f"(hard) vs {args.our_reset_s:.2f} s here (soft).",
        "",
        "| loop | s per batched step | s per episode | episodes/hour | 500 episodes (a suite) | speed-up |",
        "|---|---|---|---:|---:|---:|",
        f"| upstream, one env | {args.a100_forward_s} + {args.gpu_sim_step_s} = {upstream_step:.3f} | "
        f"{steps:.0f} x {upstream_step:.3f} + {args.upstream_reset_s} = {3600 / upstream:.1f} | {upstream:.0f} | "
        f"{500 / upstream:.1f} h | 1.0x |",
    ]
    for n in args.a100_num_envs:
        batched = args.a100_forward_s + (n - 1) * args.a100_extra_sample_s + args.gpu_sim_step_s
        per_episode = steps * batched / n + args.our_reset_s
        ours = 3600 / per_episode
        lines.append(
            f"| evaluate.py --num-envs {n} | {args.a100_forward_s} + {n - 1} x {args.a100_extra_sample_s} + "
            f"{args.gpu_sim_step_s} = {batched:.3f} | {steps:.0f} x {batched:.3f} / {n} + {args.our_reset_s} = "
            f"{per_episode:.1f} | {ours:.0f} | {500 / ours:.1f} h | {ours / upstream:.1f}x |"
        )
    lines.append(
        "\n(The tail of each task, when fewer than --num-envs init states remain, runs at smaller batches; "
        "with 50 trials and 8 envs that costs a few percent.)"
    )
    return lines


def main(args: Args) -> None:
    torch.manual_seed(0)
    policy = openvla_policy.load_vla(args.model, args.suite)
    rows = [measure(policy, args, n) for n in args.num_envs]
    print("\n".join(measured_table(rows, args) + a100_estimate(args)))


if __name__ == "__main__":
    main(tyro.cli(Args))
