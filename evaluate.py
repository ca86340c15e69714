"""Per-task and per-suite LIBERO success rates of an OpenVLA-style policy, under the official protocol.

    python evaluate.py --suite libero_goal --model openvla/openvla-7b-finetuned-libero-goal --num-envs 8
    python evaluate.py --suite libero_goal --model <dir> --lora runs/<run>   # or runs/<run>/checkpoint/adapter
    python evaluate.py --suite all --model tiny --trials-per-task 2 --max-steps 20   # a laptop smoke run
    torchrun --nproc-per-node 4 evaluate.py --suite libero_goal --model <dir>   # tasks split over 4 GPUs

The protocol is OpenVLA's LIBERO evaluation (README, "Conventions"): init states 0..49 of every task, greedy
decoding, 10 wait steps, the suite's step cap, success = the env's `done`, a crash counts as a failure.
Unlike upstream's one-env loop, `--num-envs` workers run different init states of the same task at once
with one batched policy call per step; results do not depend on `--num-envs` (greedy decoding and a
deterministic simulator). Every flag that departs from the protocol is printed and stored in the JSON.
"""

import hashlib
import json
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import imageio
import numpy as np
import torch.distributed as dist
import tyro
from tqdm import tqdm

import checkpoints
import cli
import libero_envs
import openvla_policy
import ranks
import recordings
import rewards
import rollout
from cli import UsageError


@dataclass
class Args:
    suite: Literal[cli.Suite, "all"] = "libero_goal"
    """LIBERO suite (libero_10 is "Long"), or `all`: spatial, object, goal and 10, with the paper's Table 1"""
    model: Optional[str] = None
    """the VLA: checkpoint dir, hub id, or `tiny` (built locally); default: OpenVLA's checkpoint of each suite"""
    lora: tuple[str, ...] = ()
    """LoRA adapter dir (with adapter_config.json) or tgrpo.py run dir; with --suite all, one per suite in order"""
    task_ids: Optional[tuple[int, ...]] = None
    """evaluate only these tasks (default: all tasks of the suite)"""
    trials_per_task: int = 50
    """episodes per task, from init states 0..trials-1 (LIBERO has 50 per task; the protocol uses all)"""
    num_envs: int = 8
    """parallel env workers; they run different init states of the same task, one batched policy call per step"""
    max_steps: Optional[int] = None
    """step cap per episode after the 10 wait steps; default: the protocol cap of the suite (goal 300, ...)"""
    temperature: float = 0.0
    """sampling temperature on the action logits; 0 = greedy, the protocol (above 0, results depend on --num-envs)"""
    seed: int = 7
    """seed of torch and numpy (OpenVLA's evaluation uses 7); only sampling (--temperature > 0) consumes it"""
    camera_size: int = cli.CAMERA_SIZE
    """agentview render size in pixels (the protocol renders 256, then resizes to 224)"""
    video: rollout.VideoChoice = "none"
    """write an mp4 of the frames the policy saw for no episode, failed episodes, or all episodes"""
    output_dir: str = "runs"
    """where a run's outputs go: <output-dir>/eval__<suite>__<model>__<time>/ (results.json, videos/)"""
    step_timeout: float = cli.STEP_TIMEOUT
    """seconds an env step may take before its worker counts as hung (the episode then fails)"""
    reset_timeout: float = cli.RESET_TIMEOUT
    """seconds an env reset may take (building a new task's scene takes longest) before its worker counts as hung"""
    device: Optional[str] = None
    """torch device; default cuda when available, else cpu (any model runs on either; a 7B one is slow on cpu)"""
    dtype: openvla_policy.DtypeChoice = "auto"
    """weights and activations of the VLA; auto: bfloat16 on cuda (as OpenVLA evaluates), float32 on cpu"""
    cuda_graphs: bool = True
    """on CUDA, replay the policy step as CUDA graphs of static shapes (--no-cuda-graphs: the eager step, as on cpu)"""
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"
    """torch.distributed backend under torchrun (tasks are split over the ranks): auto is nccl on GPUs, gloo on CPU"""
    save_episodes: bool = False
    """write each episode's recording (tokens, success, the reward info and per-step states) to <run dir>/episodes/"""
    robustness: bool = False
    """evaluate the clean suite and its four LIBERO-PRO perturbations (lan, object, swap, task) and print one row per
    model with the drop from clean; with --lora, the base model's row and the adapter's row side by side"""


TRIALS_PER_TASK = 50  # LIBERO ships 50 fixed init states per task
PROTOCOL_SEED = 7
PAPER_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
PAPER_COLUMNS = ("Spatial", "Object", "Goal", "Long")
# Published success rates (%), Spatial / Object / Goal / Long / Average, 50 trials per task.
PUBLISHED = {"OpenVLA SFT": (84.7, 88.4, 79.2, 53.7, 76.5), "TGRPO": (90.4, 92.2, 81.0, 59.2, 80.7)}
PUBLISHED_NOTE = "Long: OpenVLA reports 53.7 for its own model; the TGRPO paper's table prints 51.1 for it."
ROBUSTNESS_COLUMNS = ("clean", *cli.PERTURBATIONS)  # clean, lan, object, swap, task
# OpenVLA on LIBERO-PRO (success %), as published in the LIBERO-PRO README (github.com/Zxy-MLlab/LIBERO-PRO,
# commit 2b910b5): clean from its "Motivation" table; lan/object/swap/task from its leaderboard (Sem/Obj/Pos/Task).
PUBLISHED_ROBUSTNESS = {
    "libero_spatial": {"clean": 95.0, "lan": 97.0, "object": 97.0, "swap": 0.0, "task": 0.0},
    "libero_object": {"clean": 99.0, "lan": 98.0, "object": 98.0, "swap": 0.0, "task": 0.0},
    "libero_goal": {"clean": 98.0, "lan": 98.0, "object": 96.0, "swap": 0.0, "task": 0.0},
    "libero_10": {"clean": 93.0, "lan": 96.0, "object": 81.0, "swap": 0.0, "task": 0.0},
}
PUBLISHED_ROBUSTNESS_NOTE = (
    "published: LIBERO-PRO README (github.com/Zxy-MLlab/LIBERO-PRO, arXiv 2510.03827), OpenVLA under LIBERO-PRO's "
    "own evaluation setup (run inside openvla-oft's run_libero_eval.py); not this run's protocol"
)


# ----------------------------------------------------------------------------------------------------------
# Input checks and protocol departures


def suites_of(suite: str) -> list:
    if suite == "all":
        return list(PAPER_SUITES)
    if suite not in cli.SUITES:
        if suite in libero_envs.benchmark.get_benchmark_dict() and libero_envs.missing_suite_files(suite):
            libero_envs.get_suite(suite)  # raises, naming the files this LIBERO distribution lacks
        raise UsageError(f"--suite {suite!r} is unknown; choose one of {', '.join(cli.SUITES)}, or all")
    return [suite]


def robustness_suites(suite: str) -> list:
    """libero_goal -> [libero_goal, libero_goal_lan, libero_goal_object, libero_goal_swap, libero_goal_task]."""
    return [suite, *(f"{suite}_{key}" for key in cli.PERTURBATIONS)]


def check_task_ids(suite: str, task_ids) -> list:
    n_tasks = libero_envs.get_suite(suite).n_tasks
    if task_ids is None:
        return list(range(n_tasks))
    bad = [t for t in task_ids if not 0 <= t < n_tasks]
    if bad or not task_ids:
        raise UsageError(f"--task-ids {' '.join(map(str, bad or task_ids))}: {suite} has tasks 0..{n_tasks - 1}")
    return list(dict.fromkeys(task_ids))  # keep the order, drop repeats


def check_args(args: Args) -> None:
    """Reject bad input before any model or env is loaded; each message names its flag."""
    suites = suites_of(args.suite)
    for suite in suites:
        check_task_ids(suite, args.task_ids)
    most = TRIALS_PER_TASK
    trials = f"LIBERO has {most} fixed init states per task, so use 1..{most} ({most} is the protocol)"
    problems = [
        (not 1 <= args.trials_per_task <= TRIALS_PER_TASK, "--trials-per-task", trials),
        (args.num_envs < 1, "--num-envs", "need at least 1 env worker"),
        (args.max_steps is not None and args.max_steps < 1, "--max-steps", "need at least 1 step"),
        (args.temperature < 0, "--temperature", "must be >= 0 (0 decodes greedily)"),
        (args.step_timeout <= 0, "--step-timeout", "use a positive number of seconds"),
        (args.reset_timeout <= 0, "--reset-timeout", "use a positive number of seconds"),
    ]
    cli.check_flags(args, problems)
    rollout.check_device(args.device)
    ranks.check_dist_backend(args.dist_backend, args.device)
    for suite in suites:
        openvla_policy.resolve_checkpoint(args.model, suite)
    if args.lora and len(args.lora) != len(suites):
        raise UsageError(
            f"--lora got {len(args.lora)} adapter dir(s) for {len(suites)} suite(s) ({', '.join(suites)}): "
            "give one adapter per evaluated suite, in that order"
        )
    for lora_dir in args.lora:
        problem = checkpoints.adapter_problem(Path(lora_adapter_dir(lora_dir)))
        if problem:
            raise UsageError(f"--lora {lora_dir}: {problem}; pass a whole adapter (a tgrpo.py run or its adapter dir)")
    if args.robustness:
        for suite in suites:
            if suite not in cli.BASE_SUITES:
                raise UsageError(
                    f"--robustness --suite {suite}: pass a clean suite ({', '.join(cli.BASE_SUITES)}) or all; "
                    "its four perturbation suites are evaluated with it"
                )
            for perturbed in robustness_suites(suite)[1:]:
                check_task_ids(perturbed, args.task_ids)


def protocol_departures(suite, task_ids, trials_per_task, max_steps, temperature, camera_size, custom_states) -> list:
    """Human-readable list of every setting that makes this run differ from the published protocol."""
    departures = []
    if task_ids != list(range(libero_envs.get_suite(suite).n_tasks)):
        departures.append(f"--task-ids {' '.join(map(str, task_ids))} (protocol: all tasks)")
    if trials_per_task != TRIALS_PER_TASK:
        departures.append(f"--trials-per-task {trials_per_task} (protocol: {TRIALS_PER_TASK})")
    if max_steps != cli.EVAL_MAX_STEPS[suite]:
        departures.append(f"--max-steps {max_steps} (protocol for {suite}: {cli.EVAL_MAX_STEPS[suite]})")
    if temperature != 0:
        departures.append(f"--temperature {temperature} (protocol: 0, greedy)")
    if camera_size != cli.CAMERA_SIZE:
        departures.append(f"--camera-size {camera_size} (protocol: {cli.CAMERA_SIZE})")
    if custom_states:
        departures.append("explicit init states (protocol: the task's fixed init states 0..trials-1)")
    return departures


# ----------------------------------------------------------------------------------------------------------
# Model and LoRA adapter


def lora_adapter_dir(lora_dir: str) -> str:
    """The directory holding adapter_config.json: `lora_dir` itself, or the adapter of a tgrpo.py run dir."""
    path = Path(lora_dir)
    for candidate in (path, path / "checkpoint" / "adapter"):  # tgrpo.py saves runs/<run>/checkpoint/adapter
        if (candidate / "adapter_config.json").is_file():
            return str(candidate)
    found = sorted(str(p.parent) for p in path.glob("**/adapter_config.json"))[:5] if path.is_dir() else []
    hint = f"; adapter dirs below it: {', '.join(found)}" if found else ""
    raise UsageError(
        f"--lora {lora_dir}: no adapter_config.json there, nor in its checkpoint/adapter. Pass a tgrpo.py run dir "
        f"or the adapter dir itself{hint}"
    )


def load_lora(policy: openvla_policy.VLAPolicy, lora_dir: str) -> None:
    """Wrap policy.model with a saved LoRA adapter; a key or shape mismatch with the base model is an error.

    peft silently skips adapter weights whose names match no module, which would evaluate the base model
    under the adapter's name: so every saved tensor must be found in the wrapped model.
    """
    from peft import PeftConfig, PeftModel
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    lora_dir = lora_adapter_dir(lora_dir)
    base_name = getattr(policy.model, "name_or_path", "?")
    adapter_base = PeftConfig.from_pretrained(lora_dir).base_model_name_or_path
    mismatch = f"--lora {lora_dir} does not match the base model {base_name} (adapter made for {adapter_base})"
    try:
        model = PeftModel.from_pretrained(policy.model, lora_dir)
    except (RuntimeError, ValueError, KeyError) as error:
        raise UsageError(f"{mismatch}: {str(error).strip().splitlines()[-1][:400]}") from error
    # The file may or may not carry embedding/lm_head base weights (peft's save_embedding_layers); LoRA
    # weights it must carry, every one of them.
    saved = load_peft_weights(lora_dir, device="cpu")
    loadable = get_peft_model_state_dict(model, save_embedding_layers=True)
    unused = sorted(set(saved) - set(loadable))
    missing = sorted(k for k in loadable if "lora_" in k and k not in saved)
    if unused or missing:
        raise UsageError(
            f"{mismatch}: {len(unused)} saved tensors match no module (e.g. {unused[:2]}), "
            f"{len(missing)} adapter modules got no weights (e.g. {missing[:2]})"
        )
    if Path(str(adapter_base)).name != Path(str(base_name)).name:
        print(f"[evaluate] note: --lora {lora_dir} was made on {adapter_base}; evaluating it on {base_name}")
    # peft 0.11 loaded the saved fp32 weights into LoRA weights of the base dtype: on a bf16 base their bf16 rounding,
    # which is what tgrpo.py samples and trains with (it steps fp32 copies and rounds the model's weights from them).
    model.eval()
    policy.model = model  # LoRA layers are injected in place, so VLAPolicy's calls go through the adapter


def load_policy(
    model: Optional[str],
    suite: str,
    lora_dir: Optional[str] = None,
    device=None,
    dtype: openvla_policy.DtypeChoice = "auto",
    fast: Optional[bool] = None,
) -> openvla_policy.VLAPolicy:
    policy = openvla_policy.load_vla(model, suite, device, dtype, fast)
    if lora_dir:
        load_lora(policy, lora_dir)
    return policy


# ----------------------------------------------------------------------------------------------------------
# Episodes: many init states of one task over the pool's workers


def start_episode(init_state_id: int, result: Optional[dict], keep_frames: bool) -> dict:
    return {
        "init_state_id": int(init_state_id),
        "image": None if result is None else result["image"],
        "frames": [result["image"]] if keep_frames and result is not None else [],
        "digest": hashlib.sha256(),
        "length": 0,
        "start": time.perf_counter(),
        "recording": None,  # what --save-episodes keeps of it (start_recording)
    }


def fingerprint(episode: dict, state: Optional[dict]) -> str:
    """Hash of the action tokens and the final eef/object positions: equal hashes = identical episodes."""
    digest = episode["digest"].copy()
    if state is not None:
        digest.update(np.asarray(state["eef_pos"], np.float64).tobytes())
        for name in sorted(state["objects"]):
            digest.update(np.asarray(state["objects"][name]["pos"], np.float64).tobytes())
    return digest.hexdigest()[:16]


def finish_episode(episode: dict, success: bool, error: Optional[str], state: Optional[dict], **labels) -> dict:
    """The episode's JSON record; `labels` (suite, task_id, task_name) say which task it belongs to."""
    record = {
        **labels,
        "init_state_id": episode["init_state_id"],
        "success": bool(success),
        "length": episode["length"],
        "wall_time": round(time.perf_counter() - episode["start"], 3),
        "error": error,
        "fingerprint": fingerprint(episode, state),
        "video": None,
        "recording": None,
    }
    return record


def start_recording(result: Optional[dict], **facts) -> dict:
    """What --save-episodes keeps of an episode: the `info` a reward file would get all episode (`facts`: its
    suite, task name, instruction and step cap; None after a failed reset), then per step the action tokens, their
    log-prob and the reward `state`, as collections keep them."""
    info = None if result is None else rewards.build_reward_info(initial=result["state"], **facts)
    return {"info": info, "tokens": [], "log_probs": [], "states": []}


def episode_group(episode: dict, record: dict, instruction: str) -> recordings.Group:
    """The episode as a group of one trajectory, the recording rescore.py reads. No reward file scored it (rewards
    NaN, reward_file None), and its frames are not kept: images is (1, T, 0, 0, 3) (--video writes them)."""
    kept = episode["recording"]
    steps = len(kept["states"])  # a crashed step has no state: left out, as collections leave it out
    return recordings.Group(
        suite=record["suite"],
        task_name=record["task_name"],
        instruction=instruction,
        init_state_id=record["init_state_id"],
        images=np.zeros((1, steps, 0, 0, 3), np.uint8),
        tokens=np.array(kept["tokens"], np.int64).reshape(1, steps, openvla_policy.ACTION_DIM),
        log_probs=np.array(kept["log_probs"], np.float32).reshape(1, steps),
        rewards=np.full((1, steps), np.nan, np.float32),
        mask=np.ones((1, steps), bool),
        success=np.array([record["success"]]),
        lengths=np.array([steps]),
        failed=np.array([record["error"] is not None]),
        reward_infos=[kept["info"]],
        reward_states=[kept["states"]],
        reward_file=None,
        reward_sha256=None,
    )


def write_video(frames: list, video_dir, record: dict) -> Path:
    outcome = "success" if record["success"] else "failure"
    name = f"{record['suite']}__task{record['task_id']:02d}__init{record['init_state_id']:02d}__{outcome}.mp4"
    path = Path(video_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, frames, fps=libero_envs.CONTROL_FREQ, macro_block_size=1)
    return path


def advance(episode: dict, action_tokens: np.ndarray, log_prob, result: Optional[dict], keep_frames: bool) -> None:
    episode["length"] += 1
    episode["digest"].update(np.asarray(action_tokens, np.int64).tobytes())
    if result is not None:
        episode["image"] = result["image"]
        if keep_frames:
            episode["frames"].append(result["image"])
        if episode["recording"] is not None:
            episode["recording"]["tokens"].append(action_tokens)
            episode["recording"]["log_probs"].append(log_prob)
            episode["recording"]["states"].append(result["state"])


RESET_ERROR = "env worker crashed or hung during reset (its error is printed on stderr)"


def episode_end(result: Optional[dict], length: int, max_steps: int):
    """(finished, success, error) after a step: success = LIBERO's `done`; a crashed env is a failure."""
    if result is None:
        return True, False, f"env worker crashed or hung at step {length} (its error is printed on stderr)"
    if result["done"]:
        return True, True, None
    return length >= max_steps, False, None


def evaluate_task(
    policy,
    pool,
    *,
    suite: str,
    task_id: int,
    init_states,
    max_steps: int,
    temperature: float = 0.0,
    camera_size: int = cli.CAMERA_SIZE,
    video: str = "none",
    video_dir: Optional[str] = None,
    episode_dir: Optional[str] = None,
    on_episode: Optional[Callable] = None,
    stop: Optional[Callable] = None,
) -> list:
    """One episode per init state, spread over the pool's workers; returns records sorted by init state.

    Each step makes one batched policy call for every live env, then steps them in parallel; a finished
    episode frees its worker for the next pending init state straight away. When `stop()` turns true the
    episodes in progress are dropped and the finished ones returned. With `episode_dir`, each finished
    episode's recording (episode_group) is written there as it finishes.
    """
    task = libero_envs.get_task(suite, task_id)
    instruction = libero_envs.task_instruction(suite, task_id)  # the perturbed one on _lan/_task suites
    spec = libero_envs.EnvSpec(libero_envs.task_bddl_path(task), libero_envs.env_horizon(max_steps), camera_size)
    pending, running, records = deque(enumerate(init_states)), {}, []

    def finish(episode, success, error, state):
        record = finish_episode(episode, success, error, state, suite=suite, task_id=task_id, task_name=task.name)
        if episode["frames"] and (video == "all" or (video == "failures" and not success)):
            record["video"] = str(write_video(episode["frames"], video_dir, record))
        if episode["recording"] is not None:
            path = Path(episode_dir) / f"{suite}__task{task_id:02d}__init{record['init_state_id']:02d}.npz"
            episode_group(episode, record, instruction).save(path)
            record["recording"] = str(path)
        records.append(record)
        if on_episode is not None:
            on_episode(records[-1])

    while (pending or running) and not (stop and stop()):
        free = [w for w in range(pool.num_envs) if w not in running][: len(pending)]
        if free:
            starts = [pending.popleft() for _ in free]
            # Episode k gets the task's k-th fixture placement, as in OpenVLA's one-env loop.
            episode_ids = [k for k, _ in starts]
            results = pool.reset(free, spec, [state for _, state in starts], episode_ids, task_label=task.name)
            for w, (state_id, _), result in zip(free, starts, results):
                episode = start_episode(state_id, result, video != "none")
                if episode_dir is not None:
                    facts = dict(suite=suite, task_name=task.name, instruction=instruction, max_steps=max_steps)
                    episode["recording"] = start_recording(result, **facts)
                if result is None:
                    finish(episode, False, RESET_ERROR, None)
                else:
                    running[w] = episode
        if not running:
            continue
        ids = sorted(running)
        tokens, log_probs, actions = policy.act(np.stack([running[w]["image"] for w in ids]), instruction, temperature)
        for w, result, action_tokens, log_prob in zip(ids, pool.step(ids, actions), tokens, log_probs):
            episode = running[w]
            advance(episode, action_tokens, log_prob, result, keep_frames=video != "none")
            finished, success, error = episode_end(result, episode["length"], max_steps)
            if finished:
                finish(running.pop(w), success, error, None if result is None else result["state"])
    return sorted(records, key=lambda record: record["init_state_id"])


# ----------------------------------------------------------------------------------------------------------
# A whole suite (the function tgrpo.py calls for periodic evaluation)


def check_suite_request(suite: str, task_ids, trials_per_task: int, video: str, video_dir: Optional[str]) -> list:
    """The tasks evaluate_suite runs, once its arguments are checked (its callers need not go through check_args)."""
    suites_of(suite)
    task_ids = check_task_ids(suite, task_ids)
    if not 1 <= trials_per_task <= TRIALS_PER_TASK:
        raise UsageError(f"--trials-per-task {trials_per_task}: use 1..{TRIALS_PER_TASK}")
    if video != "none" and video_dir is None:
        raise ValueError("video_dir is needed to write videos")
    return task_ids


def evaluate_suite(
    policy: openvla_policy.VLAPolicy,
    suite: str,
    *,
    task_ids=None,
    trials_per_task: int = TRIALS_PER_TASK,
    num_envs: int = 8,
    max_steps: Optional[int] = None,
    temperature: float = 0.0,
    camera_size: int = cli.CAMERA_SIZE,
    pool: Optional[libero_envs.EnvPool] = None,
    video: str = "none",
    video_dir: Optional[str] = None,
    episode_dir: Optional[str] = None,
    progress: bool = True,
    init_states: Optional[dict] = None,
    step_timeout: float = cli.STEP_TIMEOUT,
    reset_timeout: float = cli.RESET_TIMEOUT,
    stop: Optional[Callable] = None,
) -> dict:
    """Success rates of `policy` on `suite` under the protocol, unless the arguments say otherwise.

    `pool`: an existing EnvPool to run on, made with the policy's image pipeline (e.g. the trainer's; it stays open),
    else one of `num_envs` workers is made and closed. `init_states`: {task_id: array (K, D)} of explicit flattened MuJoCo states
    that replace the task's fixed ones (K episodes). Returns the summary of `summarize_suite`.

    Under torchrun every rank calls it: each runs its share of the tasks, and all get the whole summary, the
    same as one process computes for greedy decoding. `stop()` turning true on any rank ends the evaluation
    early on all of them with KeyboardInterrupt.
    """
    task_ids = check_suite_request(suite, task_ids, trials_per_task, video, video_dir)
    max_steps = max_steps or cli.EVAL_MAX_STEPS[suite]
    custom_states = init_states or {}
    rank, world_size = ranks.rank_and_world_size()
    episodes_by_task = {
        t: custom_states.get(t, libero_envs.get_init_states(suite, t)[:trials_per_task])
        for t in task_ids[rank::world_size]
    }
    own_pool = pool is None
    size = min(num_envs, max([len(states) for states in episodes_by_task.values()], default=1))
    pool = pool or libero_envs.EnvPool(
        size, openvla_policy.preprocess_image, step_timeout=step_timeout, reset_timeout=reset_timeout
    )
    total = sum(len(states) for states in episodes_by_task.values())
    bar = tqdm(total=total, desc=suite, disable=not progress or rank > 0, dynamic_ncols=True)
    episodes, start = [], time.perf_counter()

    def on_episode(record):
        episodes.append(record)
        wins = sum(r["success"] for r in episodes)
        bar.set_postfix_str(f"task {record['task_id']}  success {wins}/{len(episodes)} = {wins / len(episodes):.1%}")
        bar.update(1)

    try:
        for task_id, states in episodes_by_task.items():
            evaluate_task(
                policy,
                pool,
                suite=suite,
                task_id=task_id,
                init_states=states,
                max_steps=max_steps,
                temperature=temperature,
                camera_size=camera_size,
                video=video,
                video_dir=video_dir,
                episode_dir=episode_dir,
                on_episode=on_episode,
                stop=stop,
            )
    finally:
        bar.close()
        if own_pool:
            pool.close()
    episodes, wall_time = gather_episodes(episodes, bool(stop and stop()), time.perf_counter() - start)
    departures = protocol_departures(
        suite, task_ids, trials_per_task, max_steps, temperature, camera_size, custom_states=bool(custom_states)
    )
    return summarize_suite(suite, task_ids, episodes, max_steps, temperature, departures, wall_time)


def gather_episodes(episodes: list, stopped: bool, wall_time: float) -> tuple:
    """(every rank's episode records, the longest wall time); KeyboardInterrupt on all ranks if any was stopped."""
    everything = ranks.gather_from_ranks((episodes, stopped, wall_time))
    if any(stopped for _, stopped, _ in everything):
        raise KeyboardInterrupt
    return [record for part, _, _ in everything for record in part], max(wall_time for _, _, wall_time in everything)


def summarize_suite(suite, task_ids, episodes, max_steps, temperature, departures, wall_time) -> dict:
    episodes = sorted(episodes, key=lambda r: (r["task_id"], r["init_state_id"]))
    tasks = []
    for task_id in task_ids:
        task, task_episodes = libero_envs.get_task(suite, task_id), [r for r in episodes if r["task_id"] == task_id]
        wins = sum(r["success"] for r in task_episodes)
        tasks.append(
            {
                "task_id": task_id,
                "task_name": task.name,
                "instruction": libero_envs.task_instruction(suite, task_id),
                "successes": wins,
                "trials": len(task_episodes),
                "success_rate": wins / max(1, len(task_episodes)),
                "errors": sum(r["error"] is not None for r in task_episodes),
            }
        )
    wins = sum(r["success"] for r in episodes)
    return {
        "suite": suite,
        "successes": wins,
        "trials": len(episodes),
        "success_rate": wins / max(1, len(episodes)),
        "errors": sum(r["error"] is not None for r in episodes),
        "max_steps": max_steps,
        "temperature": temperature,
        "departures": departures,
        "wall_time": round(wall_time, 1),
        "episodes_per_hour": round(len(episodes) / max(wall_time, 1e-9) * 3600, 1),
        "tasks": tasks,
        "episodes": episodes,
    }


# ----------------------------------------------------------------------------------------------------------
# Reports


def format_task_table(result: dict) -> str:
    suite = result["suite"]
    lines = [
        f"\n{suite}: {result['trials']} episodes, step cap {result['max_steps']}, "
        f"{result['wall_time']:.0f} s ({result['episodes_per_hour']:.0f} episodes/hour)",
        "",
        "| task | instruction | successes / trials | % |",
        "|---:|---|---:|---:|",
    ]
    for task in result["tasks"]:
        errors = f" ({task['errors']} crashed)" if task["errors"] else ""
        lines.append(
            f"| {task['task_id']} | {task['instruction']} | {task['successes']} / {task['trials']}{errors} | "
            f"{100 * task['success_rate']:.1f} |"
        )
    total = f"{result['successes']} / {result['trials']}"
    lines.append(f"| | **{suite} average** | {total} | {100 * result['success_rate']:.1f} |")
    if suite in PAPER_SUITES:
        column = PAPER_SUITES.index(suite)
        published = ", ".join(f"{name} {row[column]}" for name, row in PUBLISHED.items())
        lines.append(f"\npublished success % on {suite} (50 trials x 10 tasks, not this run): {published}")
    lines.append(departures_line(result["departures"]))
    return "\n".join(lines)


def robustness_rows(results: dict) -> list:
    """One row per (clean suite, model) of a --robustness run: success % per column and the drop from clean."""
    rows = {}
    for key, result in results.items():
        suite, model = result["suite"], result.get("model", "base")
        base = cli.base_suite(suite)
        row = rows.setdefault((base, model), {"suite": base, "model": model, "success": {}})
        row["success"][suite[len(base) + 1 :] or "clean"] = 100 * result["success_rate"]
    for row in rows.values():
        success = row["success"]
        perturbed = [success[key] for key in cli.PERTURBATIONS if key in success]
        row["drop"] = {key: success["clean"] - success[key] for key in cli.PERTURBATIONS if key in success}
        complete = perturbed and "clean" in success
        row["mean_drop"] = success["clean"] - sum(perturbed) / len(perturbed) if complete else None
    return list(rows.values())


def format_robustness_table(results: dict, departed: bool) -> str:
    """Per clean suite: one row per model (clean, lan, object, swap, task, drop), then the published OpenVLA row."""

    def cells(values) -> str:
        return " | ".join("-" if value is None else f"{value:.1f}" for value in values)

    lines = []
    rows = robustness_rows(results)
    for suite in dict.fromkeys(row["suite"] for row in rows):
        note = " (protocol departures, see above)" if departed else ""
        lines += ["", f"{suite}: success % under the LIBERO-PRO perturbations{note}"]
        lines += ["", "| model | " + " | ".join(ROBUSTNESS_COLUMNS) + " | drop from clean |", "|---|" + "---:|" * 6]
        for row in (r for r in rows if r["suite"] == suite):
            values = [row["success"].get(column) for column in ROBUSTNESS_COLUMNS]
            lines.append(f"| {row['model']} | {cells([*values, row['mean_drop']])} |")
        published = PUBLISHED_ROBUSTNESS[suite]
        values = [published[column] for column in ROBUSTNESS_COLUMNS]
        drop = values[0] - sum(values[1:]) / len(values[1:])
        lines.append(f"| OpenVLA (published, LIBERO-PRO) | {cells([*values, drop])} |")
    lines += ["", "drop from clean: clean minus the mean of lan, object, swap and task, in percentage points"]
    return "\n".join(lines + [PUBLISHED_ROBUSTNESS_NOTE])


def departures_line(departures: list) -> str:
    if not departures:
        return "protocol: official (no departures)"
    return "PROTOCOL DEPARTURES (not comparable with published numbers): " + "; ".join(departures)


def format_table1(results: dict) -> str:
    """The paper's Table 1 layout: this run beside the published rows, which are labelled as such."""
    rates = [100 * results[s]["success_rate"] for s in PAPER_SUITES]
    departed = any(results[s]["departures"] for s in PAPER_SUITES)
    label = "this run (protocol departures, see above)" if departed else "this run"
    rows = {label: (*rates, sum(rates) / len(rates)), **{f"{name} (published)": row for name, row in PUBLISHED.items()}}
    lines = ["", "| success % | " + " | ".join(PAPER_COLUMNS) + " | Average |", "|---|" + "---:|" * 5]
    lines += [f"| {name} | " + " | ".join(f"{value:.1f}" for value in row) + " |" for name, row in rows.items()]
    return "\n".join(lines + ["", PUBLISHED_NOTE])


# ----------------------------------------------------------------------------------------------------------
# Command line


def run_dir_of(args: Args) -> Path:
    model = "openvla" if args.model is None else Path(args.model.rstrip("/")).name
    suite = f"{args.suite}-robustness" if args.robustness else args.suite
    return Path(args.output_dir) / f"eval__{suite}__{model}{'+lora' if args.lora else ''}__{int(time.time())}"


def seed_departure(args: Args) -> list:
    if args.seed == PROTOCOL_SEED:
        return []
    effect = "" if args.temperature > 0 else ", no effect with greedy decoding"
    return [f"--seed {args.seed} (protocol: {PROTOCOL_SEED}{effect})"]


def write_json(path: Path, args: Args, results: dict, complete: bool) -> None:
    summaries = {suite: {k: v for k, v in r.items() if k != "episodes"} for suite, r in results.items()}
    report = {
        "complete": complete,  # False while --suite all is still running: the file is rewritten per suite
        "config": asdict(args),
        "protocol": {
            "trials_per_task": TRIALS_PER_TASK,
            "init_states": "0..trials-1 of each task",
            "temperature": 0.0,
            "num_wait_steps": libero_envs.NUM_WAIT_STEPS,
            "max_steps": cli.EVAL_MAX_STEPS,
            "camera_size": cli.CAMERA_SIZE,
            "seed": PROTOCOL_SEED,
            "fixture_placements": f"episode k: the k-th after seeding the task's env with {libero_envs.PLACEMENT_SEED}",
            "success": "env done",
        },
        "departures": {suite: r["departures"] for suite, r in results.items()},
        "suites": summaries,
        "published": {"columns": [*PAPER_COLUMNS, "Average"], "rows": PUBLISHED, "note": PUBLISHED_NOTE},
        "episodes": [record for r in results.values() for record in r["episodes"]],
    }
    if all(s in results for s in PAPER_SUITES):
        report["average"] = sum(results[s]["success_rate"] for s in PAPER_SUITES) / len(PAPER_SUITES)
    if args.robustness:
        report["robustness"] = {
            "rows": robustness_rows(results),
            "published": {"rows": PUBLISHED_ROBUSTNESS, "note": PUBLISHED_ROBUSTNESS_NOTE},
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))


def planned_runs(args: Args) -> list:
    """(result key, suite, model label, adapter dir) of every evaluation the flags ask for. --robustness: each
    model (the base model; with --lora also base + adapter) on each clean suite and its four perturbations."""
    runs = []
    for i, clean in enumerate(suites_of(args.suite)):
        lora_dir = args.lora[i] if args.lora else None
        if not args.robustness:
            runs.append((clean, clean, "base+lora" if lora_dir else "base", lora_dir))
            continue
        for model, adapter in [("base", None)] + ([("base+lora", lora_dir)] if lora_dir else []):
            for suite in robustness_suites(clean):
                runs.append((suite if adapter is None else f"{suite}+lora", suite, model, adapter))
    return runs


def main(args: Args) -> dict:
    check_args(args)
    runs = planned_runs(args)
    rank, _, device = ranks.start_distributed(args.dist_backend, args.device)
    run_dir = Path(ranks.from_rank0(str(run_dir_of(args))))
    out, video_dir = run_dir / "results.json", run_dir / "videos"
    episode_dir = run_dir / "episodes" if args.save_episodes else None
    rollout.seed_everything(args.seed)
    # The workers boot (import LIBERO, start MuJoCo) while the model loads.
    num_envs = min(args.num_envs, args.trials_per_task)
    pool = libero_envs.EnvPool(
        num_envs, openvla_policy.preprocess_image, step_timeout=args.step_timeout, reset_timeout=args.reset_timeout
    )
    results, loaded, policy = {}, None, None
    try:
        for n, (key, suite, model, lora_dir) in enumerate(runs):
            if loaded != (cli.base_suite(suite), lora_dir):  # a perturbation suite uses its base's checkpoint
                policy = None  # frees the 7B before the next one loads
                fast = None if args.cuda_graphs else False
                policy = load_policy(args.model, suite, lora_dir, device, args.dtype, fast)
                loaded = (cli.base_suite(suite), lora_dir)
            subdir = model if args.robustness else ""  # --robustness: each model's videos and recordings apart
            result = evaluate_suite(
                policy,
                suite,
                task_ids=args.task_ids,
                trials_per_task=args.trials_per_task,
                max_steps=args.max_steps,
                temperature=args.temperature,
                camera_size=args.camera_size,
                pool=pool,
                video=args.video,
                video_dir=str(video_dir / subdir),
                episode_dir=None if episode_dir is None else str(episode_dir / subdir),
            )
            result["departures"] += seed_departure(args)
            result["model"] = model
            for record in result["episodes"]:
                record["model"] = model
            results[key] = result
            if rank == 0:
                print(format_task_table(result))
                write_json(out, args, results, complete=n == len(runs) - 1)
    except KeyboardInterrupt:  # Ctrl-C, or a scheduler's SIGTERM: what completed is in results.json already
        done = f"the {len(results)} completed suite(s) are in {out}" if results else "no suite had completed"
        print(f"\n[evaluate] interrupted; {done}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        pool.close()
    if rank > 0:
        return results
    if args.robustness:
        print(format_robustness_table(results, departed=any(r["departures"] for r in results.values())))
    elif args.suite == "all":
        print(format_table1(results))
    videos = f" and videos in {video_dir}" if video_dir.exists() else ""
    episodes = f" and episode recordings in {episode_dir} (for rescore.py --reward-file)" if episode_dir else ""
    print(f"\nwrote {out}{videos}{episodes}")
    return results


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's stop is a Ctrl-C here
    try:
        main(cli_args)
    except (UsageError, rewards.RewardFileError) as error:
        sys.exit(f"error: {error}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
