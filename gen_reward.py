"""Ask an LLM to write a dense multi-stage reward for LIBERO tasks, validate it on the simulator, then save it.

    python gen_reward.py --suite libero_goal --task-ids 8 --provider anthropic --llm <model name>
    python gen_reward.py --suite all --provider openai --llm <model name>
    python gen_reward.py --provider openai --base-url http://localhost:8000/v1 --llm <name>   # vLLM, Ollama, ...
    python gen_reward.py --check                                      # validate the shipped files; no API call
    python gen_reward.py --suite libero_goal --task-ids 8 --dry-run   # print the prompt; no API call

A reply is first checked by rewards/'s AST allow-list (rejected code never runs), then called in a separate
process on real states of its task. A failing reply goes back to the LLM with the error (Eureka-style
reflection); nothing is written unless a reply passes. The file contract and state schema: rewards/README.md.
With --recordings, each candidate is also scored on recorded trajectories of its task (successful ones too, which
random actions never reach), and its file's header says whether it ranks the successes above the failures.

    python gen_reward.py --suite libero_goal --task-ids 8 --llm <model name> --recordings runs/<run>/episodes
"""

import email.utils
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

import h5py
import numpy as np
import requests
import tyro
from tqdm import tqdm

import cli
import libero_envs
import recordings
import rewards
from cli import UsageError
from rewards import hacking


@dataclass
class Args:
    suite: Literal[cli.Suite, "all"] = "libero_goal"
    """LIBERO suite; `all` = libero_spatial, libero_object, libero_goal and libero_10 (libero_90 only by name)"""
    task_ids: Optional[tuple[int, ...]] = None
    """tasks of the suite (0-9; 0-89 for libero_90); default: every task of the suite"""
    provider: Literal["anthropic", "openai"] = "anthropic"
    """wire format: Anthropic Messages API, or OpenAI chat completions (also vLLM, Ollama, llama.cpp server)"""
    llm: Optional[str] = None
    """the LLM's model name sent to the API (required to generate; not needed for --check or --dry-run)"""
    base_url: Optional[str] = None
    """API root; default https://api.anthropic.com (anthropic) or https://api.openai.com/v1 (openai)"""
    api_key_env: Optional[str] = None
    """environment variable that holds the API key; default ANTHROPIC_API_KEY or OPENAI_API_KEY"""
    dry_run: bool = False
    """print the prompt of each selected task and exit, without any API call"""
    check: bool = False
    """validate the existing reward files on real states, without any API call; exit non-zero listing failures"""
    max_attempts: int = 3
    """LLM replies per task; each failing reply is sent back with its error for the next one"""
    overwrite: bool = False
    """replace existing reward files (by default they are kept and their task is skipped)"""
    demos: Optional[str] = None
    """directory of LIBERO hdf5 demos (<task_name>_demo.hdf5) whose key end-effector poses go into the prompt"""
    rewards_dir: str = "rewards"
    """reward files are read and written as <rewards-dir>/<suite>/<task_name>.py"""
    max_tokens: int = 8192
    """reply length limit sent to Anthropic (which requires one); OpenAI-style servers use their own default"""
    connect_timeout: float = 10.0
    """seconds to open the HTTP connection"""
    read_timeout: float = 300.0
    """seconds to wait for the reply once connected (large models take minutes for a long reply)"""
    max_retries: int = 4
    """retries of one request after HTTP 429, HTTP 5xx, a connection error or a timeout"""
    retry_backoff: float = 2.0
    """first retry delay in seconds, doubled on each retry, unless the server sends Retry-After"""
    validation_init_states: int = 4
    """validation runs the reward on init states 0..K-1 of the task"""
    validation_random_steps: int = 5
    """random actions after the wait steps of each init state; the state after each one is checked too"""
    validation_timeout: float = 60.0
    """seconds the validation process may take for all its calls together"""
    reward_cpu_seconds: float = rewards.DEFAULT_CPU_SECONDS
    """CPU seconds one reward call may use (as in tgrpo.py)"""
    reward_memory_mb: int = rewards.DEFAULT_MEMORY_MB
    """address space (MB) the reward process may use above its start-up size (as in tgrpo.py)"""
    seed: int = 0
    """seed of the random validation actions"""
    recordings: tuple[str, ...] = ()
    """recorded groups (.npz) or folders of them (rollout.py, tgrpo.py --save-groups, evaluate.py --save-episodes):
    each candidate is also scored on those of its task, to see whether it ranks successes above failures"""


MAIN_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}
DEFAULT_KEY_ENVS = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
ANTHROPIC_VERSION = "2023-06-01"
EXAMPLE_REWARD_FILE = rewards.REWARDS_DIR / "libero_goal" / "put_the_bowl_on_the_plate.py"
REPO = Path(__file__).resolve().parent
CODE_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class LLMAPIError(RuntimeError):
    """The LLM API could not be reached or refused the request; the message says what to change."""


def log(message: str) -> None:
    tqdm.write(f"[gen_reward] {message}", file=sys.stderr)  # keeps the progress bar intact


def redact(text: str, secret: Optional[str]) -> str:
    """Remove the API key from anything a server sends back before it is shown or written."""
    return text.replace(secret, "[REDACTED]") if secret else text


# ----------------------------------------------------------------------------------------------------------
# Tasks and files


def select_tasks(suite: str, task_ids: Optional[tuple], rewards_dir: Optional[str] = None) -> list:
    """(suite, task_id, task) for every task the flags select; with `rewards_dir` and --suite all, also every task
    of a perturbation suite that has its own reward file there (so --check covers the _task files that exist)."""
    if task_ids is not None and suite == "all":
        raise UsageError("--task-ids selects tasks of one suite; pass it with --suite libero_goal (or another)")
    suites = MAIN_SUITES if suite == "all" else (suite,)
    selected = []
    for name in suites:
        for task_id in task_ids if task_ids is not None else range(libero_envs.get_suite(name).n_tasks):
            selected.append((name, task_id, libero_envs.get_task(name, task_id)))
    if suite == "all" and rewards_dir is not None:
        for name in cli.PERTURBED_SUITES:
            for task_id, task in enumerate(libero_envs.get_suite(name).tasks):
                if reward_path(rewards_dir, name, task).is_file():
                    selected.append((name, task_id, task))
    return selected


def reward_path(rewards_dir: str, suite: str, task) -> Path:
    return Path(rewards_dir) / suite / f"{task.name}.py"


def generate_command(suite: str, task_id: int, rewards_dir: str) -> str:
    command = rewards.regenerate_command(suite, task_id)
    if Path(rewards_dir).resolve() != rewards.REWARDS_DIR.resolve():
        command += f" --rewards-dir {rewards_dir}"
    return command


def write_atomically(path: Path, text: str) -> None:
    """Readers (a running training job, a --check) see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------------
# Validation on real states


@dataclass
class ValidationSummary:
    num_states: int
    num_init_states: int
    num_random_steps: int
    low: float
    high: float
    num_distinct: int
    ranking: str = ""  # with --recordings: how the file ranks the task's recorded trajectories (rank_recordings)

    def __str__(self) -> str:
        return (
            f"{self.num_states} states (init states 0-{self.num_init_states - 1}, each after the wait steps and after "
            f"1-{self.num_random_steps} random actions): rewards in [{self.low:.4g}, {self.high:.4g}], "
            f"{self.num_distinct} distinct values, deterministic"
        )


@lru_cache(maxsize=4)
def collect_validation_states(suite: str, task_id: int, num_init_states: int, num_random_steps: int, seed: int):
    """Reward states of the task from the real simulator, and the `info` of each, as the env workers build them.

    Per init state: the state after reset and the wait steps, then the state after each random action.
    Returns (states, infos, labels); a label says where a state came from, for error messages.
    """
    task = libero_envs.get_task(suite, task_id)
    init_states = libero_envs.get_init_states(suite, task_id)[:num_init_states]
    env = libero_envs.make_env(
        libero_envs.task_bddl_path(task), render=False, horizon=libero_envs.env_horizon(num_random_steps)
    )
    rng = np.random.default_rng(seed)
    states, infos, labels, placement_rng_states = [], [], [], []
    try:
        for k, init_state in enumerate(init_states):  # as evaluation's episode k: init state k, placement k
            obs = libero_envs.reset_env(env, init_state, placement=k, rng_states=placement_rng_states)
            initial = rewards.build_reward_state(env, obs, 0, False)
            # The reward serves training, so `info` carries the training cap, as in a tgrpo.py run.
            info = rewards.build_reward_info(
                suite,
                task.name,
                libero_envs.task_instruction(suite, task_id),
                max_steps=cli.TRAIN_MAX_STEPS[suite],
                initial=initial,
            )
            states.append(initial)
            infos.append(info)
            labels.append(f"init state {k} after the wait steps")
            for step in range(1, num_random_steps + 1):
                obs, _, done, _ = env.step(rng.uniform(-1.0, 1.0, libero_envs.ACTION_DIM))
                states.append(rewards.build_reward_state(env, obs, step, done))
                infos.append(info)
                labels.append(f"init state {k} after {step} random action(s)")
    finally:
        env.close()
    return states, infos, labels


def run_validation_process(job: dict, timeout: float, secret_names: tuple) -> dict:
    """Run rewards.validation_main in a fresh interpreter whose environment holds no secrets.

    It imports only rewards/ (no torch, no LIBERO), so it starts in about a second. Its answer comes back as
    JSON, never pickle: the process runs untrusted code, so nothing it writes may run code here.
    """
    environment = rewards.environ_without_secrets(secret_names)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    command = [sys.executable, "-c", "import rewards; rewards.validation_main()"]
    filename = job["filename"]
    try:
        done = subprocess.run(command, input=pickle.dumps(job), capture_output=True, timeout=timeout, env=environment)
    except subprocess.TimeoutExpired:
        raise rewards.RewardFileError(
            f"{filename}: calling compute_reward on {len(job['states'])} states twice did not finish within "
            f"{timeout:g} s (an endless loop? if merely slow: --validation-timeout)"
        ) from None
    if done.returncode != 0:
        raise rewards.reward_process_died(
            filename,
            done.returncode,
            where="during validation",
            cpu_seconds=job["cpu_seconds"],
            memory_mb=job["memory_mb"],
        )
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise rewards.RewardFileError(
            f"{filename}: the validation process answered garbage: {done.stdout[:200]!r}"
        ) from None


def summarize_rewards(first: list, second: list, labels: list, filename: str, settings: dict) -> ValidationSummary:
    """Deterministic and not constant (finite is checked per call), or a RewardFileError saying which state broke it."""
    for a, b, label in zip(first, second, labels):
        if a != b:
            raise rewards.RewardFileError(
                f"{filename}: compute_reward is not deterministic: the state of {label} gave {a!r}, then {b!r}; the "
                "reward must be a pure function of (state, info) and keep nothing between calls"
            )
    if len(set(first)) < 2:
        raise rewards.RewardFileError(
            f"{filename}: compute_reward returned the same value {first[0]!r} on all {len(first)} states (different "
            "init states and random arm motions); it must vary with the end-effector and object positions, e.g. "
            "with a shaping term toward the key pose of the current stage"
        )
    return ValidationSummary(
        num_states=len(first),
        num_init_states=settings["num_init_states"],
        num_random_steps=settings["num_random_steps"],
        low=min(first),
        high=max(first),
        num_distinct=len(set(first)),
    )


def validate_reward_source(
    source: str, suite: str, task_id: int, filename: str, args: Args, secret_names: tuple = (), recorded: list = ()
) -> ValidationSummary:
    """Check `source` against the contract here (never running it), then call it in a confined process on real
    states of the task: every call within the limits, finite, the same twice, not constant. Then, given `recorded`
    (recording files of the task), score them as rescore.py does and say how it ranks them (summary.ranking).

    Raises rewards.RewardFileError saying what failed.
    """
    rewards.check_reward_source(source, filename)
    settings = validation_settings(args)
    states, infos, labels = collect_validation_states(suite, task_id, **settings)
    job = dict(
        source=source,
        filename=filename,
        states=states,
        infos=infos,
        labels=labels,
        cpu_seconds=args.reward_cpu_seconds,
        memory_mb=args.reward_memory_mb,
    )
    answer = run_validation_process(job, args.validation_timeout, secret_names)
    if answer["status"] != "ok":
        raise rewards.RewardFileError(answer["message"])
    first, second = answer["rounds"]
    summary = summarize_rewards(first, second, labels, filename, settings)
    if recorded:
        summary.ranking = rank_recordings(source, filename, recorded, args, secret_names)
    return summary


def rank_recordings(source: str, filename: str, paths: list, args: Args, secret_names: tuple = ()) -> str:
    """Score the recorded trajectories in `paths` with the candidate, in a reward process confined and limited as
    in training (recordings.rescore_group, as rescore.py), and say how its return ranks successes and failures."""
    process = rewards.RewardProcess(args.reward_cpu_seconds, args.reward_memory_mb, secret_names)
    returns, success = [], []
    try:
        for path in paths:
            group = recordings.load_recording(path)
            try:
                scored = recordings.rescore_group(process, filename, source, group)
            except rewards.RewardFileError as error:
                raise rewards.RewardFileError(f"{error} (on the recorded trajectories of {path})") from None
            group_returns, group_success = recordings.outcomes([group], [scored])
            returns.append(group_returns)
            success.append(group_success)
    finally:
        process.close()
    return ranking_verdict(hacking.ranking(np.concatenate(returns), np.concatenate(success)), len(paths))


def ranking_verdict(ranked: dict, num_files: int) -> str:
    """One line: the mean returns of the successful and the failed trajectories, their rank correlation, and
    whether the file ranks the successes above the failures (the correlation is positive)."""
    seen = f"{ranked['trajectories']} recorded trajectories ({ranked['succeeded']} succeeded, {num_files} files)"
    if not 0 < ranked["succeeded"] < ranked["trajectories"]:
        missing = "succeeded" if ranked["succeeded"] == 0 else "failed"
        return f"{seen}: the ranking of successes above failures cannot be checked: none of them {missing}"
    above = ranked["return_success_corr"] > 0
    return (
        f"{seen}: mean return {ranked['return_succeeded']:.4g} succeeded vs {ranked['return_failed']:.4g} failed, "
        f"rank correlation of return and success {ranked['return_success_corr']:+.2f}: "
        + ("ranks successes above failures" if above else "does NOT rank successes above failures")
    )


def validation_settings(args: Args) -> dict:
    return dict(
        num_init_states=args.validation_init_states, num_random_steps=args.validation_random_steps, seed=args.seed
    )


# ----------------------------------------------------------------------------------------------------------
# The prompt


def format_vector(values) -> str:
    return "[" + " ".join(f"{v:.3f}" for v in np.asarray(values, dtype=np.float64).ravel()) + "]"


def format_state(state: dict) -> str:
    """A real reward state, compactly: one line per object, fixture and site."""
    lines = [
        f"step {state['step']}, success {state['success']}",
        f"eef_pos {format_vector(state['eef_pos'])}   eef_quat {format_vector(state['eef_quat'])}",
        f"gripper_qpos {format_vector(state['gripper_qpos'])}   gripper_opening {state['gripper_opening']:.3f}",
        f"goal {state['goal']!r}",
        "objects:",
    ]
    width = max(len(name) for name in state["objects"])
    for name, entry in state["objects"].items():
        line = f"  {name:<{width}}  {entry['kind']:<7}  pos {format_vector(entry['pos'])}"
        line += f"  quat {format_vector(entry['quat'])}"
        if "grasped" in entry:
            line += f"  grasped {entry['grasped']}"
        if "joint_qpos" in entry:
            line += f"  joint_qpos {format_vector(entry['joint_qpos'])}"
        lines.append(line)
    return "\n".join(lines)


def read_schema(readme: Path) -> str:
    """The state and info tables of rewards/README.md (the whole README if its headings changed)."""
    text = readme.read_text()
    start, end = text.find("## `state`"), text.find("## Example state")
    return text[start:end].strip() if 0 <= start < end else text.strip()


def strip_header(source: str) -> str:
    """An example file without its provenance comment, which the LLM should not copy."""
    lines = source.splitlines()
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def pick_example(suite: str, task_name: str) -> Optional[tuple]:
    """(label, source) of a shipped reward file of a different task, preferring the bowl-on-plate one."""
    for path in [EXAMPLE_REWARD_FILE, *sorted(rewards.REWARDS_DIR.glob("*/*.py"))]:
        if path.is_file() and (path.parent.name, path.stem) != (suite, task_name):
            return f"{path.parent.name}/{path.stem}", strip_header(path.read_text())
    return None


def extract_key_poses(demo_file: Path) -> dict:
    """Mean end-effector positions where the demos close and open the gripper, and where they end.

    Demos whose sequence of gripper events differs from the most common one are left out of the means.
    """
    sequences = []
    with h5py.File(demo_file, "r") as f:
        for name in f["data"]:
            demo = f["data"][name]
            position_key = next((k for k in ("ee_pos", "robot0_eef_pos") if k in demo["obs"]), None)
            if position_key is None:
                raise UsageError(f"{demo_file}: data/{name}/obs has neither ee_pos nor robot0_eef_pos")
            eef = np.asarray(demo["obs"][position_key], dtype=np.float64)
            closed = np.asarray(demo["actions"])[:, -1] > 0  # LIBERO: +1 closes the gripper, -1 opens it
            switches = np.flatnonzero(closed[1:] != closed[:-1]) + 1
            events = [("gripper closes" if closed[i] else "gripper opens", eef[i]) for i in switches]
            sequences.append(events + [("demonstration ends", eef[-1])])
    if not sequences:
        raise UsageError(f"{demo_file} holds no demonstrations under data/")
    pattern = Counter(tuple(event for event, _ in seq) for seq in sequences).most_common(1)[0][0]
    matching = [seq for seq in sequences if tuple(event for event, _ in seq) == pattern]
    poses = [
        (event, np.mean([seq[j][1] for seq in matching], axis=0), np.std([seq[j][1] for seq in matching], axis=0))
        for j, event in enumerate(pattern)
    ]
    return {"file": str(demo_file), "num_demos": len(sequences), "num_matching": len(matching), "poses": poses}


def format_key_poses(key_poses: Optional[dict]) -> str:
    if key_poses is None:
        return (
            "No demonstrations are available. Derive every target pose from the live object positions in `state` "
            "(e.g. just above the object to grasp, above the target object or region to place, at a drawer's "
            "handle side to pull it); do not hard-code absolute positions, since objects start at different "
            "places in different init states."
        )
    lines = [
        f"Key end-effector poses from {key_poses['num_matching']} of the {key_poses['num_demos']} demonstrations "
        "(world frame, metres; mean and spread over demos, whose object layouts differ by a few centimetres):"
    ]
    for k, (event, mean, spread) in enumerate(key_poses["poses"], start=1):
        lines.append(f"  KEY_POSE_{k} ({event}): {format_vector(mean)}  spread {format_vector(spread)}")
    lines.append(
        "You may hard-code these as constants and shape the end effector toward the key pose of the current "
        "stage. Where a live object position gives the same target (e.g. the grasp pose of the object), prefer "
        "the live position: these constants are averages."
    )
    return "\n".join(lines)


def build_prompt(
    *,
    suite: str,
    task_name: str,
    instruction: str,
    bddl_text: str,
    schema_text: str,
    state_text: str,
    example: Optional[tuple],
    key_poses_text: str,
) -> str:
    """The full request for one task: the paper's multi-stage recipe, the task, the env facts and the contract."""
    forbidden = ", ".join(f"`{name}`" for name in sorted(rewards.FORBIDDEN_NAMES))
    example_text = ""
    if example:
        example_text = f"# Worked example (a different task: {example[0]})\n\n```python\n{example[1].strip()}\n```\n"
    return f"""You are writing a dense reward function for reinforcement-learning fine-tuning of a \
vision-language-action policy (OpenVLA) on a LIBERO tabletop manipulation task, simulated in robosuite/MuJoCo \
with a Franka Panda arm.

# Task

suite: {suite}
task: {task_name}
instruction: "{instruction}"

# What to write

Based on the task description, the LIBERO environment facts below and the characteristics of RL for robotics, \
generate a multi-stage reward function where the robot receives constant stage-specific rewards at proximity \
thresholds, with progressively increasing values per stage and a significantly higher completion reward.

- Split the task into its natural stages, in order (e.g. reach the object, grasp it, lift it, carry it above the \
target, set it down; or reach the handle, pull the drawer open). Give each object of a multi-object task its own stages.
- Each stage adds a constant reward when its condition holds: a distance under a threshold (metres), a grasp flag, a \
height gain, a joint position. A later stage is worth more than an earlier one.
- Completion (all goal predicates in `state["goal"]` satisfied, or `state["success"]`) adds a reward much larger \
than all stage rewards together. The goal predicates are exactly LIBERO's success test: use them for the last stage.
- Add end-effector pose shaping: a small continuous term pulling the end effector toward the key pose of the current \
stage (e.g. `0.5 * math.exp(-5.0 * distance)`), never larger than one stage reward. It makes the reward vary with \
every movement.

Key poses: {key_poses_text}

# Rules

- Reply with the complete file in one ```python code block. Do not write a header comment: gen_reward.py adds one.
- Imports: only `import math` and `import numpy as np`.
- The signature, exactly: `def compute_reward(state: dict, info: dict) -> float`
- Return one finite Python float for every state (guard divisions, logs and square roots).
- A pure function: the same state gives the same value; keep nothing between calls.
- At top level: only imports, constant assignments, functions and a docstring.
- Forbidden: classes, lambdas, `global`/`nonlocal`, attribute names starting with `_`, names starting with `__`, \
and the names {forbidden}.
- Refer to objects by their BDDL names as they appear in `state["objects"]` (the example state lists them all).
- Before it is accepted, the file is checked by an AST allow-list and then called on real simulator states of this \
task (several init states, each after the wait steps and a few random actions): it must return finite floats, the \
same value twice for the same state, and different values across those states.

# The reward state (from rewards/README.md)

{schema_text}

# Example values: this task, init state 0, after the wait steps

`state`:
```
{state_text}
```
`info`: {{"suite": "{suite}", "task_name": "{task_name}", "instruction": "{instruction}", "max_steps": \
{cli.TRAIN_MAX_STEPS[suite]}, "initial": <the state dict above>}}

# The task's BDDL problem file

```
{bddl_text.strip()}
```

{example_text}"""


def task_prompt(suite: str, task_id: int, task, args: Args) -> tuple:
    """(prompt, how the key poses were obtained) for one task, from its files and a real state."""
    if args.demos is None:
        key_poses, key_pose_note = None, "targets derived from object positions (no demonstrations)"
    else:
        demo_file = Path(args.demos) / f"{task.name}_demo.hdf5"
        if not demo_file.is_file():
            raise UsageError(
                f"no demonstrations for {suite}/{task.name} at {demo_file}; point --demos at the directory of "
                "LIBERO's <task_name>_demo.hdf5 files, or omit --demos to derive targets from object positions"
            )
        key_poses = extract_key_poses(demo_file)
        key_pose_note = (
            f"from {key_poses['num_matching']} of {key_poses['num_demos']} demonstrations in {demo_file.name}"
        )
    states, _, _ = collect_validation_states(suite, task_id, **validation_settings(args))
    prompt = build_prompt(
        suite=suite,
        task_name=task.name,
        instruction=libero_envs.task_instruction(suite, task_id),  # a _task suite's new instruction, not the base's
        bddl_text=Path(libero_envs.task_bddl_path(task)).read_text(),
        schema_text=read_schema(rewards.REWARDS_DIR / "README.md"),
        state_text=format_state(states[0]),
        example=pick_example(suite, task.name),
        key_poses_text=format_key_poses(key_poses),
    )
    return prompt, key_pose_note


# ----------------------------------------------------------------------------------------------------------
# LLM HTTP APIs


def build_request(provider: str, base_url: str, api_key: str, model: str, messages: list, max_tokens: int) -> tuple:
    """(url, headers, JSON body) in the provider's wire format."""
    base = base_url.rstrip("/")
    if provider == "anthropic":
        base = base.removesuffix("/v1")  # the API root, given with or without the version that OpenAI URLs carry
        headers = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        return f"{base}/v1/messages", headers, {"model": model, "max_tokens": max_tokens, "messages": messages}
    headers = {"Authorization": f"Bearer {api_key}", "content-type": "application/json"}
    return f"{base}/chat/completions", headers, {"model": model, "messages": messages}


def parse_reply(provider: str, payload) -> tuple:
    """(reply text, whether the length limit cut it off) from a provider's JSON reply."""
    try:
        if provider == "anthropic":
            text = "".join(block.get("text", "") for block in payload["content"] if block.get("type") == "text")
            return text, payload.get("stop_reason") == "max_tokens"
        choice = payload["choices"][0]
        return choice["message"]["content"] or "", choice.get("finish_reason") == "length"
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise LLMAPIError(
            f"{provider} replied without the expected fields ({type(error).__name__}: {error}): {str(payload)[:300]}. "
            f"Is --base-url a {provider}-compatible API?"
        ) from None


def reply_json(provider: str, response, api_key: str) -> dict:
    try:
        return response.json()
    except ValueError:
        raise LLMAPIError(redact(f"{provider} sent a reply that is not JSON: {response.text[:300]}", api_key)) from None


def server_error_message(response) -> str:
    """The server's own explanation, on one line: both APIs send {"error": {"message": ...}}."""
    try:
        error = response.json().get("error", response.json())
        message = str(error.get("message", error) if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        message = response.text or response.reason or "(empty body)"  # e.g. an HTML page from a proxy
    return " ".join(message.split())[:500]


def is_retryable(status: int) -> bool:
    """Rate limits and server trouble pass; 501/505 mean this server does not offer the call at all."""
    return status == 429 or (status >= 500 and status not in (501, 505))


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Retry-After in seconds, from either of its two forms (a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def refusal_message(provider: str, url: str, status: int, server_message: str, key_env: str, model: str) -> str:
    remedies = {
        400: f"check --llm {model} and --max-tokens",
        401: f"check {key_env}: it must hold a valid, current key for this API (--base-url)",
        403: f"check that the key in {key_env} is allowed to use model {model}",
        404: f"check --base-url (OpenAI-compatible servers usually end in /v1) and --llm {model}",
        501: "check --base-url: the server there does not implement this API",
    }
    remedy = remedies.get(status, f"check --base-url, --llm {model} and {key_env}")
    return f"{provider} API refused the request: HTTP {status} from {url}: {server_message}. Remedy: {remedy}"


def post_with_retries(url: str, headers: dict, body: dict, api_key: str, key_env: str, args: Args) -> dict:
    """POST and return the JSON reply, retrying 429, 5xx, connection errors and timeouts with backoff."""
    provider = args.provider
    for attempt in range(args.max_retries + 1):
        retry_after = None
        try:
            response = requests.post(url, headers=headers, json=body, timeout=(args.connect_timeout, args.read_timeout))
        except requests.exceptions.ReadTimeout:
            problem = f"no reply within the read timeout of {args.read_timeout:g} s from {url} (--read-timeout)"
        except requests.exceptions.ConnectionError as error:  # a connect timeout is one too
            problem = f"connection to {url} failed (check --base-url and the network; --connect-timeout): {error}"
        except requests.exceptions.RequestException as error:
            message = f"{provider} request to {url} failed: {error}; check --base-url"
            raise LLMAPIError(redact(message, api_key)) from None
        else:
            if response.ok:
                return reply_json(provider, response, api_key)
            message = server_error_message(response)
            if not is_retryable(response.status_code):
                refusal = refusal_message(provider, url, response.status_code, message, key_env, body["model"])
                raise LLMAPIError(redact(refusal, api_key))
            problem = f"HTTP {response.status_code} from {url}: {message}"
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        problem = redact(problem, api_key)
        if attempt == args.max_retries:
            raise LLMAPIError(
                f"{provider} request failed {attempt + 1} times; the last error: {problem}. Try again later, or raise "
                "--max-retries, --read-timeout or --connect-timeout"
            )
        delay = retry_after if retry_after is not None else args.retry_backoff * 2**attempt
        log(f"{provider}: {problem}; retry {attempt + 1} of {args.max_retries} in {delay:.1f} s")
        time.sleep(delay)


def ask_llm(messages: list, api_key: str, key_env: str, args: Args) -> tuple:
    """Send the conversation; (reply text with the key redacted, whether it was cut off)."""
    base_url = args.base_url or DEFAULT_BASE_URLS[args.provider]
    url, headers, body = build_request(args.provider, base_url, api_key, args.llm, messages, args.max_tokens)
    payload = post_with_retries(url, headers, body, api_key, key_env, args)
    text, truncated = parse_reply(args.provider, payload)
    return redact(text, api_key), truncated


def read_api_key(args: Args) -> tuple:
    key_env = args.api_key_env or DEFAULT_KEY_ENVS[args.provider]
    api_key = os.environ.get(key_env, "").strip()
    if not api_key:
        raise UsageError(
            f"no API key for {args.provider}: the environment variable {key_env} is not set. "
            f"Export it (export {key_env}=...), or name another variable with --api-key-env. "
            "For a local OpenAI-compatible server that needs no key, set it to any value."
        )
    return api_key, key_env


# ----------------------------------------------------------------------------------------------------------
# Generation: ask, validate, reflect


def extract_code(reply: str, truncated: bool, max_tokens: int) -> str:
    """The reply's python code block that defines compute_reward (the last one, if it revised itself)."""
    blocks = [block for block in CODE_BLOCK.findall(reply) if "def compute_reward" in block]
    if blocks:
        return blocks[-1].strip() + "\n"
    if "```" not in reply and "def compute_reward" in reply:
        return reply.strip() + "\n"  # some local models answer with the bare file
    cut = ""
    if truncated:
        cut = f" The reply was cut off at the length limit (--max-tokens {max_tokens}): write a shorter file."
    raise rewards.RewardFileError(
        f"no ```python code block defining compute_reward was found in the reply.{cut} Reply with the whole file in "
        "one ```python code block."
    )


def reflection_message(error: str) -> str:
    return (
        f"Your reward file was rejected:\n\n{error}\n\n"
        "Fix the problem and reply with the complete corrected file in one ```python code block."
    )


def generate_reward(
    prompt: str, suite: str, task_id: int, task, api_key: str, key_env: str, args: Args, recorded: list = ()
) -> tuple:
    """(source, validation summary, attempt) of the first reply that passes; RewardFileError after the last."""
    messages, errors = [{"role": "user", "content": prompt}], []
    filename = f"{suite}/{task.name}.py"
    for attempt in range(1, args.max_attempts + 1):
        log(f"{filename}: attempt {attempt} of {args.max_attempts}: asking {args.provider} model {args.llm}")
        reply, truncated = ask_llm(messages, api_key, key_env, args)
        messages.append({"role": "assistant", "content": reply or "(empty reply)"})  # APIs reject empty turns
        try:
            source = extract_code(reply, truncated, args.max_tokens)
            summary = validate_reward_source(source, suite, task_id, filename, args, (key_env,), recorded)
            return source, summary, attempt
        except rewards.RewardFileError as error:
            reason = redact(str(error), api_key)  # it may quote the reply or what the code read
            errors.append(f"attempt {attempt}: {reason}")
            log(f"rejected: {reason}")
            messages.append({"role": "user", "content": reflection_message(reason)})
    raise rewards.RewardFileError(f"no valid reward after {args.max_attempts} attempts:\n  " + "\n  ".join(errors))


def render_header(suite: str, task, args: Args, *, attempt: int, prompt: str, key_pose_note: str, summary) -> str:
    instruction = libero_envs.task_instruction(
        suite, libero_envs.get_suite(suite).tasks.index(task)
    )  # a _task suite's own
    lines = [
        f'# Reward for {suite} / {task.name}: "{instruction}".',
        f"# Made by: gen_reward.py with {args.provider} model {args.llm} (reply {attempt} of at most "
        f"{args.max_attempts}); key poses: {key_pose_note}.",
        f"# Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d')}",
        f"# Prompt sha256: {hashlib.sha256(prompt.encode()).hexdigest()}",
        f"# Validation: {summary}.",
    ]
    if summary.ranking:
        lines.append(f"# Recordings: {summary.ranking}.")
    return "\n".join(lines) + "\n"


def check_reward_files(tasks: list, args: Args, recorded: dict) -> list:
    """Validate the existing file of every task (on its recordings in `recorded` too); returns one failure message
    per bad or missing file."""
    failures = []
    for suite, task_id, task in tqdm(tasks, desc="checking reward files", unit="task"):
        path = reward_path(args.rewards_dir, suite, task)
        if not path.is_file():
            command = generate_command(suite, task_id, args.rewards_dir)
            failures.append(f"{path}: missing. Generate it with: {command}")
            continue
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError) as error:  # e.g. no read permission: one line, the check goes on
            failures.append(f"{path}: cannot read it ({error}). Fix the file or its permissions")
            continue
        try:
            task_recorded = recorded.get((suite, task.name), [])
            summary = validate_reward_source(source, suite, task_id, str(path), args, recorded=task_recorded)
            log(f"OK {path}: {summary}")
            if summary.ranking:
                log(f"{path} on {summary.ranking}")
        except rewards.RewardFileError as error:
            failures.append(str(error))
            log(f"FAILED {error}")
    return failures


def task_recordings(paths: tuple, tasks: list) -> dict:
    """{(suite, task name): its recording files} among --recordings, for the selected tasks. Every file is read
    here, so that a bad one stops the run (one line naming it) before any API call; those of other tasks are
    skipped, with one line."""
    if not paths:
        return {}
    selected, recorded, others = {(suite, task.name) for suite, _, task in tasks}, {}, Counter()
    for path in recordings.find_recordings(paths):
        group = recordings.load_recording(path)
        if (group.suite, group.task_name) in selected:
            recorded.setdefault((group.suite, group.task_name), []).append(path)
        else:
            others[f"{group.suite}/{group.task_name}"] += 1
    if others:
        log(f"--recordings: skipped {sum(others.values())} recording(s) of other tasks ({', '.join(others)})")
    if len(recorded) < len(selected):
        log(f"--recordings: {len(selected) - len(recorded)} of the {len(selected)} tasks have no recording to rank")
    return recorded


def check_args(args: Args) -> None:
    """Reject input that cannot work, naming the flag, the value and the fix, before any env starts or API call."""
    problems = [
        (args.max_attempts < 1, "--max-attempts", "use 1 or more (replies per task)"),
        (args.max_tokens < 1, "--max-tokens", "use 1 or more"),
        (args.connect_timeout <= 0, "--connect-timeout", "use a positive number of seconds"),
        (args.read_timeout <= 0, "--read-timeout", "use a positive number of seconds (large models take minutes)"),
        (args.max_retries < 0, "--max-retries", "use 0 (no retry) or more"),
        (args.retry_backoff < 0, "--retry-backoff", "use 0 or more seconds"),
        (not 1 <= args.validation_init_states <= 50, "--validation-init-states", "LIBERO has 50 per task: use 1..50"),
        (args.validation_random_steps < 0, "--validation-random-steps", "use 0 or more"),
        (args.validation_timeout <= 0, "--validation-timeout", "use a positive number of seconds"),
        *rewards.limit_problems(args.reward_cpu_seconds, args.reward_memory_mb),
    ]
    cli.check_flags(args, problems)
    url = urllib.parse.urlsplit(args.base_url or DEFAULT_BASE_URLS[args.provider])
    if url.scheme not in ("http", "https") or not url.netloc:
        raise UsageError(
            f"--base-url {args.base_url}: not an http(s) URL; pass the API root, e.g. {DEFAULT_BASE_URLS[args.provider]} "
            "or http://localhost:8000/v1 for a local OpenAI-compatible server"
        )


def main(args: Args) -> None:
    check_args(args)
    tasks = select_tasks(args.suite, args.task_ids, args.rewards_dir if args.check else None)
    recorded = task_recordings(args.recordings, tasks)  # read now: a bad file stops the run before any API call
    if args.check:
        failures = check_reward_files(tasks, args, recorded)
        if failures:
            raise SystemExit(f"{len(failures)} of {len(tasks)} reward files failed --check:\n" + "\n".join(failures))
        print(f"all {len(tasks)} reward files passed --check")
        return
    if not args.dry_run and not args.llm:
        raise UsageError(f"pass --llm <model name> to generate with {args.provider} (--dry-run shows the prompt)")
    api_key, key_env = (None, None) if args.dry_run else read_api_key(args)

    failures = []
    for suite, task_id, task in tqdm(tasks, desc="generating rewards", unit="task", disable=args.dry_run):
        path = reward_path(args.rewards_dir, suite, task)
        if path.exists() and not args.overwrite and not args.dry_run:
            log(f"kept {path}: it exists (pass --overwrite to replace it)")
            continue
        prompt, key_pose_note = task_prompt(suite, task_id, task, args)
        if args.dry_run:
            print(f"{'=' * 40} prompt for {suite}/{task.name} {'=' * 40}\n{prompt}")
            continue
        try:
            source, summary, attempt = generate_reward(
                prompt, suite, task_id, task, api_key, key_env, args, recorded.get((suite, task.name), [])
            )
        except LLMAPIError as error:
            raise UsageError(str(error)) from None
        except rewards.RewardFileError as error:
            failures.append(f"{suite}/{task.name}: {error}")
            continue
        header = render_header(
            suite, task, args, attempt=attempt, prompt=prompt, key_pose_note=key_pose_note, summary=summary
        )
        write_atomically(path, redact(header + "\n" + source, api_key))
        log(f"wrote {path}: {summary}")
        if summary.ranking:
            log(f"{path} on {summary.ranking}")
    if failures:
        summary = f"error: {len(failures)} of {len(tasks)} tasks got no valid reward; nothing was written for them"
        raise SystemExit(summary + ":\n" + "\n".join(failures))


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        main(cli_args)
    except (UsageError, rewards.RewardFileError) as error:
        sys.exit(f"error: {error}")
