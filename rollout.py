"""Collect N parallel LIBERO trajectories of an OpenVLA-style policy from one init state (a TGRPO group), or
several such groups at once (collect_groups).

    python rollout.py --suite libero_goal --task-ids 8 --num-envs 4 --max-steps 200 --model tiny --video all

The env follows OpenVLA's published LIBERO conventions (README, "Conventions"); the policy samples the 7
action tokens of all live envs, of every group, in one batched call; each env lives in its own worker process.
"""

import hashlib
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import imageio
import numpy as np
import torch
import tyro
from tqdm import tqdm

import rewards
from cli import CAMERA_SIZE, RESET_TIMEOUT, STEP_TIMEOUT, TRAIN_MAX_STEPS, Suite, UsageError, base_suite, check_flags
from libero_envs import (
    CONTROL_FREQ,
    EnvPool,
    EnvSpec,
    env_horizon,
    get_init_states,
    get_suite,
    get_task,
    task_bddl_path,
    task_goal,
    task_instruction,
)
from openvla_policy import ACTION_DIM, DtypeChoice, VLAPolicy, load_vla, preprocess_image, resolve_checkpoint
from recordings import Group
from rewards import RewardFileError

VideoChoice = Literal["none", "failures", "all"]


@dataclass
class Args:
    suite: Suite = "libero_goal"
    """LIBERO suite (libero_10 is "Long")"""
    task_ids: tuple[int, ...] = (8,)
    """tasks of the suite to collect one group each for (0-9; 0-89 for libero_90)"""
    init_state_id: int = 0
    """which of the task's 50 fixed init states all envs start from (with evaluation's fixture placement of that episode)"""
    num_envs: int = 4
    """N: parallel trajectories in the group, one worker process each"""
    max_steps: Optional[int] = None
    """step cap per trajectory after the 10 wait steps; default: the suite's training cap (200; 520 for libero_10)"""
    model: Optional[str] = None
    """the VLA: checkpoint dir, hub id, or `tiny` (built locally); default: the suite's OpenVLA checkpoint"""
    temperature: float = 1.0
    """sampling temperature on the 256 action-token logits; 0 decodes greedily"""
    termination: Literal["first-success", "independent"] = "first-success"
    """first-success: all envs stop when one succeeds (the paper); independent: each stops at its own success"""
    reward_file: Optional[str] = None
    """reward file to use instead of rewards/<suite>/<task_name>.py"""
    seed: int = 1
    """seed of the sampling (torch, numpy); fixture placements follow the task's sequence (README, "Conventions")"""
    video: VideoChoice = "none"
    """write an mp4 of the frames the policy saw for no env, the envs that failed, or all envs"""
    camera_size: int = CAMERA_SIZE
    """agentview render size in pixels (OpenVLA's LIBERO checkpoints saw 256)"""
    step_timeout: float = STEP_TIMEOUT
    """seconds an env step may take before its worker counts as hung and is replaced"""
    reset_timeout: float = RESET_TIMEOUT
    """seconds an env reset may take (building a new task's scene takes longest) before its worker counts as hung"""
    reward_cpu_seconds: float = rewards.DEFAULT_CPU_SECONDS
    """CPU seconds one reward call may use before the run stops (reward code runs confined, a process per env)"""
    reward_memory_mb: int = rewards.DEFAULT_MEMORY_MB
    """address space (MB) a reward process may use above its start-up size, all its calls together"""
    device: Optional[str] = None
    """torch device; default cuda when available, else cpu (any model runs on either; a 7B one is slow on cpu)"""
    dtype: DtypeChoice = "auto"
    """weights and activations of the VLA; auto: bfloat16 on cuda (as OpenVLA runs), float32 on cpu"""
    cuda_graphs: bool = True
    """on CUDA, replay the policy step as CUDA graphs of static shapes (--no-cuda-graphs: the eager step, as on cpu)"""
    output_dir: str = "runs"
    """where a run's outputs go: <output-dir>/<run name>/"""


# ----------------------------------------------------------------------------------------------------------
# Reward files: the contract and its confinement live in rewards/; reward code runs only in reward processes


@dataclass(frozen=True)
class RewardFile:
    """A reward file's text, checked against the contract but never run in this process."""

    path: str
    source: str
    sha256: str


def read_reward_file(suite: str, task_name: str, path: Optional[str] = None) -> RewardFile:
    """rewards/<suite>/<task_name>.py (or `path`), read and checked; a problem names the command that fixes it."""
    path = Path(path) if path is not None else rewards.reward_file_path(suite, task_name)
    task_id = next((i for i, task in enumerate(get_suite(suite).tasks) if task.name == task_name), "<id>")
    fix = rewards.regenerate_command(suite, task_id)
    if not path.is_file():
        raise RewardFileError(f"no reward file at {path}. Generate it with: {fix} (or pass --reward-file <path>)")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        why = error.strerror if isinstance(error, OSError) else f"not UTF-8 text ({error.reason} at byte {error.start})"
        raise RewardFileError(f"cannot read the reward file {path}: {why}. Fix the file or its permissions") from None
    try:
        rewards.check_reward_source(source, str(path))
    except RewardFileError as error:
        raise RewardFileError(f"{error}\nFix the file, or regenerate it with: {fix} --overwrite") from None
    return RewardFile(str(path), source, hashlib.sha256(source.encode()).hexdigest())


def read_reward_files(suite: str, task_ids, path: Optional[str] = None) -> dict:
    """{task_id: RewardFile} of a run's tasks; `path` (--reward-file) serves them all.

    A perturbation suite without its own file (rewards/<suite>/<task_name>.py) borrows its base suite's file
    where the task's goal predicates equal the base task's (_lan, _swap): the file then scores the same goal on
    the same objects. _task changes the goal and _object renames the objects, so they need their own files.
    """
    base, files, borrowed = base_suite(suite), {}, []
    for task_id in task_ids:
        name = get_task(suite, task_id).name  # a perturbed task keeps its base task's name and position
        own_file = rewards.reward_file_path(suite, name)
        if path is None and base != suite and not own_file.is_file():
            if task_goal(suite, task_id) == task_goal(base, task_id):
                files[task_id] = read_reward_file(base, name)
                borrowed.append(task_id)
                continue
            try:
                read_reward_file(suite, name)
            except RewardFileError as error:
                raise RewardFileError(
                    f"{error} ({suite} task {task_id} has the goal {task_goal(suite, task_id)}, not {base}'s "
                    f"{task_goal(base, task_id)}, so {base}'s reward file does not serve)"
                ) from None
        files[task_id] = read_reward_file(suite, name, path)
    if borrowed:
        print(
            f"[rollout] {suite} task(s) {', '.join(map(str, borrowed))} keep the goal predicates of {base}: "
            f"using {base}'s reward file(s) from {rewards.reward_file_path(base, '').parent}"
        )
    return files


@dataclass(frozen=True)
class RewardJob:
    """What a worker needs to score its env's steps: the file, the run's facts for `info`, and the limits."""

    path: str
    source: str
    suite: str
    task_name: str
    instruction: str
    max_steps: int
    cpu_seconds: Optional[float] = rewards.DEFAULT_CPU_SECONDS
    memory_mb: Optional[float] = rewards.DEFAULT_MEMORY_MB


# ----------------------------------------------------------------------------------------------------------
# One group: N trajectories from one init state (what a Group holds, and its recording: recordings/)


def still_running(live: np.ndarray, success: np.ndarray, termination: str) -> np.ndarray:
    """first-success (the paper): one success stops every env; independent: only the successful one."""
    if termination == "first-success" and success.any():
        return np.zeros_like(live)
    return live & ~success


@dataclass(frozen=True)
class GroupStart:
    """Where a group starts: a task, one of its fixed init states, and a fixture placement number (see
    libero_envs.seed_placement). `init_state`, a flattened MuJoCo state, overrides the fixed one; `generator`
    (a torch.Generator) gives the group a sampling stream of its own (None: torch's global RNG)."""

    task_id: int
    init_state_id: int
    placement: int = 0
    init_state: Optional[np.ndarray] = None
    generator: Optional[torch.Generator] = None


def group_generator(seed: int, group_index: int, device) -> torch.Generator:
    """The sampling stream of a run's `group_index`-th group: the same whichever process or batch collects it."""
    state = np.random.SeedSequence([seed, group_index]).generate_state(2, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state >> np.uint64(1)))


def envs_per_group(num_envs: int, num_groups: int, termination: str, max_steps: int) -> int:
    """N: the pool's envs split evenly over the groups, once collect_groups' arguments are checked."""
    if termination not in ("first-success", "independent"):
        raise UsageError(f"--termination {termination!r}: use first-success or independent")
    if max_steps < 1:
        raise UsageError(f"--max-steps {max_steps}: a trajectory needs at least one step")
    n, rest = divmod(num_envs, num_groups)
    if n == 0 or rest:
        raise ValueError(f"{num_envs} envs cannot hold {num_groups} groups of equal size")
    return n


def first_observations(results: list, stop: Optional[Callable]) -> tuple:
    """(failed, live, current image) of each env after the reset: a failed env shows a blank frame, takes no step."""
    failed = np.array([r is None for r in results])
    live = ~failed & (stop is None or not stop())  # a stop requested during the reset: not a single step
    image_shape = next((r["image"].shape for r in results if r is not None), (0, 0, 3))
    current = [r["image"] if r is not None else np.zeros(image_shape, np.uint8) for r in results]
    return failed, live, current


def reward_jobs(suite: str, starts: list, reward_files: dict, max_steps: int, reward_limits: tuple) -> tuple:
    """(tasks, instructions, RewardJobs) of the groups that start at `starts`, one each."""
    tasks = [get_task(suite, start.task_id) for start in starts]
    instructions = [task_instruction(suite, start.task_id) for start in starts]  # the perturbed one on _lan/_task
    jobs = [
        RewardJob(file.path, file.source, suite, task.name, instruction, max_steps, *reward_limits)
        for file, task, instruction in zip((reward_files[s.task_id] for s in starts), tasks, instructions)
    ]
    return tasks, instructions, jobs


def blank_step(num_envs: int) -> dict:
    """One step's arrays for every env of the pool, zeros until the step fills in its live envs."""
    return {
        "tokens": np.zeros((num_envs, ACTION_DIM), np.int64),
        "log_probs": np.zeros(num_envs, np.float32),
        "rewards": np.zeros(num_envs, np.float32),
        "mask": np.zeros(num_envs, bool),
    }


def collect_group(
    policy: VLAPolicy,
    pool: EnvPool,
    *,
    task_id: int,
    init_state_id: int,
    reward_file: RewardFile,
    placement: int = 0,
    init_state: Optional[np.ndarray] = None,
    generator: Optional[torch.Generator] = None,
    **options,
) -> Group:
    """One group on all of the pool's envs: collect_groups with one GroupStart (`options`: its keywords)."""
    start = GroupStart(task_id, init_state_id, placement, init_state, generator)
    return collect_groups(policy, pool, starts=[start], reward_files={task_id: reward_file}, **options)[0]


def reset_groups(
    pool: EnvPool,
    suite: str,
    starts: list,
    jobs: list,
    group_of: np.ndarray,
    *,
    max_steps: int,
    camera_size: int,
    stop: Optional[Callable] = None,
) -> list:
    """Reset each env of the pool to its group's start, to score with its group's RewardJob; a group whose
    every env failed stops the collection, unless a stop was requested (then the collection ends anyway, and
    the signal that asked for it may be what made them fail)."""
    horizon = env_horizon(max_steps)
    specs = [EnvSpec(task_bddl_path(get_task(suite, s.task_id)), horizon, camera_size) for s in starts]
    states = [
        s.init_state if s.init_state is not None else get_init_states(suite, s.task_id)[s.init_state_id] for s in starts
    ]
    results = pool.reset(
        list(range(pool.num_envs)),
        [specs[g] for g in group_of],
        [states[g] for g in group_of],
        [starts[g].placement for g in group_of],
        task_label=[jobs[g].task_name for g in group_of],
        reward_job=[jobs[g] for g in group_of],
    )
    for g, job in enumerate(jobs):
        if all(results[i] is None for i in np.flatnonzero(group_of == g)) and not (stop is not None and stop()):
            raise RuntimeError(
                f"all {len(results) // len(jobs)} env workers failed to reset on {suite}/{job.task_name} (see the "
                "warnings above); if they died at start-up, run `python rollout.py --model tiny --num-envs 1` to see "
                "the error"
            )
    return results


def collect_groups(
    policy: VLAPolicy,
    pool: EnvPool,
    *,
    suite: str,
    starts: list,
    reward_files: dict,
    max_steps: int,
    temperature: float = 1.0,
    termination: str = "first-success",
    camera_size: int = CAMERA_SIZE,
    reward_limits: tuple = (rewards.DEFAULT_CPU_SECONDS, rewards.DEFAULT_MEMORY_MB),
    progress: bool = False,
    stop: Optional[Callable] = None,
) -> list:
    """G groups at once, one per GroupStart, with N = pool.num_envs / G envs each; see `Group` for what comes
    back. One batched policy call per step serves every live env of every group (the bigger batch keeps a
    GPU busy); the groups stay independent otherwise: own task, init state, termination and sampling stream.

    The pool's workers apply the policy's image pipeline (EnvPool's image_pipeline). The rewards are computed in
    confined reward processes with `reward_files[task_id]` (`reward_limits`: CPU seconds per call, MB of address
    space). When `stop()` turns true, every trajectory ends after the step in progress.
    """
    n = envs_per_group(pool.num_envs, len(starts), termination, max_steps)
    group_of = np.repeat(np.arange(len(starts)), n)  # env -> group
    tasks, instructions, jobs = reward_jobs(suite, starts, reward_files, max_steps, reward_limits)
    timing = dict.fromkeys(("simulation", "policy"), 0.0)  # simulation includes the workers' reward calls
    start_time = time.perf_counter()
    results = reset_groups(pool, suite, starts, jobs, group_of, max_steps=max_steps, camera_size=camera_size, stop=stop)
    timing["simulation"] += time.perf_counter() - start_time
    failed, live, current = first_observations(results, stop)
    infos, states = [r and r["info"] for r in results], [[] for _ in results]  # what the reward file saw, for rescoring
    success, lengths, steps_taken = np.zeros(len(live), bool), np.zeros(len(live), np.int64), np.zeros(len(starts), int)
    steps = {name: [] for name in ("images", "tokens", "log_probs", "rewards", "mask")}  # one array per step
    label = tasks[0].name[:40] if len(starts) == 1 else f"{len(starts)} groups"

    for t in tqdm(range(max_steps), desc=f"{label} steps", leave=False, disable=not progress):
        ids = np.flatnonzero(live)
        if len(ids) == 0:
            break
        steps_taken[np.unique(group_of[ids])] += 1
        step = {"images": np.stack(current), **blank_step(len(live))}
        tick = time.perf_counter()
        step["tokens"][ids], step["log_probs"][ids], actions = policy.act(
            step["images"][ids],
            [instructions[g] for g in group_of[ids]],
            temperature,
            generators=[starts[g].generator for g in group_of[ids]],
        )
        timing["policy"] += time.perf_counter() - tick

        tick = time.perf_counter()
        results = pool.step(list(ids), actions)  # each worker steps its env and scores the step
        timing["simulation"] += time.perf_counter() - tick
        for i, result in zip(ids, results):
            if result is None:
                live[i], failed[i] = False, True
                continue
            step["rewards"][i], step["mask"][i], lengths[i], current[i] = result["reward"], True, t + 1, result["image"]
            states[i].append(result["state"])
            success[i] |= result["done"]
        for name, values in step.items():
            steps[name].append(values)
        for g in range(len(starts)):
            envs = slice(g * n, (g + 1) * n)
            live[envs] = still_running(live[envs], success[envs], termination)
        if stop is not None and stop():
            live[:] = False

    timing["total"] = time.perf_counter() - start_time
    timing["other"] = timing["total"] - timing["simulation"] - timing["policy"]
    # Steps of length 0 (a stop during the reset) keep their shapes: stack one blank step, then slice it away.
    blank = {"images": np.stack(current), **blank_step(len(live))}
    stacked = {name: np.stack(steps[name] or [blank[name]], axis=1) for name in steps}
    groups = []
    for g, (start, task, instruction) in enumerate(zip(starts, tasks, instructions)):
        envs, length = slice(g * n, (g + 1) * n), steps_taken[g]  # each group padded to its own longest
        arrays = {name: array[envs, :length] for name, array in stacked.items()}
        outcome = {"success": success[envs], "lengths": lengths[envs], "failed": failed[envs], "timing": timing}
        record = {"reward_infos": infos[envs], "reward_states": states[envs], "reward_file": jobs[g].path}
        record["reward_sha256"] = reward_files[start.task_id].sha256
        groups.append(Group(suite, task.name, instruction, start.init_state_id, **arrays, **outcome, **record))
    return groups


def save_videos(group: Group, directory: Path, which: str) -> list:
    """An mp4 of the frames the policy saw, for every env (`all`) or the envs that did not succeed (`failures`)."""
    paths = []
    for i in range(len(group.lengths)):
        if which == "none" or (which == "failures" and group.success[i]):
            continue
        path = directory / f"env{i}.mp4"
        frames = group.images[i, : max(1, group.lengths[i])]
        imageio.mimwrite(path, list(frames), fps=CONTROL_FREQ, macro_block_size=1)
        paths.append(path)
    return paths


def seed_everything(seed: int) -> None:
    """Every script's --seed: python's, numpy's and torch's RNGs (the sampling; fixture placements have their own)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_device(device: Optional[str]) -> None:
    """Refuse a device this machine does not have, before anything loads."""
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:<index>") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device {device}: no CUDA GPU is visible here; use --device cpu (--model tiny runs fast there)"
        )
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: use cpu or cuda")


def check_args(args: Args) -> None:
    for task_id in args.task_ids:
        get_task(args.suite, task_id)
    problems = [
        (not 0 <= args.init_state_id < 50, "--init-state-id", "LIBERO tasks have init states 0..49"),
        (args.num_envs < 1, "--num-envs", "use 1 or more"),
        (args.max_steps is not None and args.max_steps < 1, "--max-steps", "use 1 or more"),
        (args.temperature < 0, "--temperature", "use 0 (greedy) or more"),
        (args.step_timeout <= 0, "--step-timeout", "use a positive number of seconds"),
        (args.reset_timeout <= 0, "--reset-timeout", "use a positive number of seconds"),
        *rewards.limit_problems(args.reward_cpu_seconds, args.reward_memory_mb),
    ]
    check_flags(args, problems)
    check_device(args.device)
    resolve_checkpoint(args.model, args.suite)


def main(args: Args) -> None:
    check_args(args)
    max_steps = args.max_steps or TRAIN_MAX_STEPS[args.suite]
    tasks = {task_id: get_task(args.suite, task_id) for task_id in args.task_ids}
    reward_files = read_reward_files(args.suite, list(tasks), args.reward_file)
    seed_everything(args.seed)
    # The workers boot while the model loads.
    pool = EnvPool(args.num_envs, preprocess_image, step_timeout=args.step_timeout, reset_timeout=args.reset_timeout)
    try:
        policy = load_vla(args.model, args.suite, args.device, args.dtype, fast=None if args.cuda_graphs else False)
        for task_id, task in tasks.items():
            group = collect_group(
                policy,
                pool,
                suite=args.suite,
                task_id=task_id,
                init_state_id=args.init_state_id,
                reward_file=reward_files[task_id],
                max_steps=max_steps,
                temperature=args.temperature,
                termination=args.termination,
                camera_size=args.camera_size,
                placement=args.init_state_id,
                reward_limits=(args.reward_cpu_seconds, args.reward_memory_mb),
                progress=True,
            )
            report_group(group, args, task_id)
    finally:
        pool.close()


def report_group(group: Group, args: Args, task_id: int) -> None:
    run_dir = Path(args.output_dir) / f"rollout__{args.suite}__task{task_id}__{args.seed}__{int(time.time())}"
    run_dir.mkdir(parents=True, exist_ok=True)
    group.save(str(run_dir / "group.npz"))
    videos = save_videos(group, run_dir, args.video)
    print(f"task {args.suite}/{task_id}: {group.instruction} (init state {args.init_state_id})")
    for i in range(args.num_envs):
        status = "crashed" if group.failed[i] else "success" if group.success[i] else "failure"
        print(f"  env {i}: {status:8s} return {group.returns[i]:9.3f}  length {group.lengths[i]}")
    steps = int(group.mask.sum())
    split = "  ".join(f"{k} {v / group.timing['total']:.0%}" for k, v in group.timing.items() if k != "total")
    print(f"{steps} env steps in {group.timing['total']:.1f} s = {steps / group.timing['total']:.1f} steps/s ({split})")
    print(f"saved {run_dir / 'group.npz'}" + (f" and {len(videos)} videos" if videos else ""))


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        main(cli_args)
    except (UsageError, RewardFileError) as error:
        sys.exit(f"error: {error}")
