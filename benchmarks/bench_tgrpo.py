"""Benchmark one TGRPO iteration: group collection vs update, and the update's peak memory per micro-batch size.

    python benchmarks/bench_tgrpo.py --model tiny --num-envs 4 --max-steps 50

Prints markdown tables for the README. Peak memory is the process's resident set during the update above
its level before the update (CPU), or torch's peak allocation (CUDA).
"""

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import libero_envs  # noqa: E402
import openvla_policy  # noqa: E402
import rollout  # noqa: E402
import tgrpo  # noqa: E402


@dataclass
class Args:
    suite: str = "libero_goal"
    """LIBERO suite"""
    task_id: int = 8
    """task index within the suite"""
    model: str = "tiny"
    """checkpoint dir, hub id or `tiny`"""
    num_envs: int = 4
    """N trajectories in the group"""
    max_steps: int = 50
    """steps per trajectory (termination independent, so all N run them all unless they succeed)"""
    micro_batch_sizes: tuple[int, ...] = (1, 4, 16)
    """micro-batch sizes of the update to time and measure"""
    seed: int = 0
    """torch seed"""


class PeakRSS:
    """Samples this process's RSS every millisecond; `.peak` is the maximum seen."""

    def __enter__(self):
        self.process, self.peak, self.running = psutil.Process(), 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def measure_update(policy, group, mask, micro_batch_size: int, device) -> tuple:
    """(seconds, peak extra bytes) of one update of the group at this micro-batch size."""
    optimizer = torch.optim.AdamW(tgrpo.master_weights(policy.model), lr=1e-5)
    args = tgrpo.Args(micro_batch_size=micro_batch_size)
    rewards = torch.as_tensor(group.rewards)
    advantages = tgrpo.compute_advantages(rewards, mask, args.alpha_step, args.alpha_traj)[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    with PeakRSS() as rss:
        base_rss = psutil.Process().memory_info().rss
        tgrpo.update_policy(policy, [group], [advantages], [mask], optimizer, args, int(mask.sum()))
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    extra = torch.cuda.max_memory_allocated() - base if device.type == "cuda" else rss.peak - base_rss
    return seconds, extra


def main(args: Args) -> None:
    torch.manual_seed(args.seed)
    task = libero_envs.get_task(args.suite, args.task_id)
    reward_file = rollout.read_reward_file(args.suite, task.name)
    pool = libero_envs.EnvPool(args.num_envs, openvla_policy.preprocess_image)
    policy = openvla_policy.load_vla(args.model, args.suite)
    policy.model = tgrpo.add_lora(policy.model, rank=16, alpha=None)
    try:
        common = dict(suite=args.suite, task_id=args.task_id, init_state_id=0, reward_file=reward_file)
        rollout.collect_group(policy, pool, **common, max_steps=2)  # warm-up: builds the envs
        group = rollout.collect_group(policy, pool, **common, max_steps=args.max_steps, termination="independent")
    finally:
        pool.close()
    mask = torch.as_tensor(group.mask)
    samples = int(mask.sum())
    lines = [
        f"TGRPO iteration, {args.model} on {policy.device}, {args.suite} task {args.task_id}, N={args.num_envs}, "
        f"{args.max_steps} steps = {samples} samples",
        "",
        "| micro-batch | collection s | update s | update s / sample | update peak memory MB |",
        "|---|---|---|---|---|",
    ]
    for micro_batch_size in args.micro_batch_sizes:
        seconds, extra = measure_update(policy, group, mask, micro_batch_size, policy.device)
        lines.append(
            f"| {micro_batch_size} | {group.timing['total']:.1f} | {seconds:.1f} | {seconds / samples * 1e3:.0f} ms "
            f"| {extra / 2**20:.0f} |"
        )
    split = ", ".join(f"{k} {v:.1f} s" for k, v in group.timing.items())
    lines += ["", f"collection split: {split}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
