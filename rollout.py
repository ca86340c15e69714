"""Collect N parallel LIBERO trajectories of an OpenVLA-style policy from one init state (a TGRPO group).

    python rollout.py --suite libero_goal --task-id 8 --num-envs 4 --max-steps 200 --model tiny --video

The env follows OpenVLA's published LIBERO conventions (DESIGN.md sections 4-5); the policy samples the 7
action tokens of all live envs in one batched call; each env lives in its own worker process.
"""

import logging
import os

# MuJoCo picks its GL backend at import time; EGL renders headless (Mesa on CPU, the driver on NVIDIA).
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
# robosuite warns at every import (so in every env worker) that it has no private macro file.
logging.getLogger("robosuite_logs").addFilter(lambda record: "macro" not in record.getMessage())

import ast
import builtins
import contextlib
import hashlib
import io
import json
import math
import multiprocessing as mp
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing.connection import wait as wait_for_connections
from pathlib import Path
from typing import Callable, Literal, Optional

import imageio
import numpy as np
import torch
import torch._dynamo  # noqa: F401  (loads triton's LLVM before Mesa's EGL does: the other order segfaults)
import tyro
from libero.libero import benchmark, get_libero_path
from libero.libero.envs import OffScreenRenderEnv
from libero.libero.envs.env_wrapper import ControlEnv
from libero.libero.envs.predicates import eval_predicate_fn
from PIL import Image
from tqdm import tqdm


@dataclass
class Args:
    suite: str = "libero_goal"
    """LIBERO suite: libero_spatial, libero_object, libero_goal, libero_10 (Long) or libero_90"""
    task_id: int = 8
    """task index within the suite (0-9; 0-89 for libero_90)"""
    init_state_id: int = 0
    """which of the task's 50 fixed init states all envs start from"""
    num_envs: int = 4
    """N: parallel trajectories in the group, one worker process each"""
    max_steps: int = 200
    """step cap per trajectory after the 10 wait steps (libero_10 demos run up to 505 steps: use 520)"""
    model: Optional[str] = None
    """local checkpoint dir, hub id, or `tiny` (a tiny VLA built locally); default: the suite's OpenVLA checkpoint"""
    temperature: float = 1.0
    """sampling temperature on the 256 action-token logits; 0 decodes greedily"""
    termination: Literal["first-success", "independent"] = "first-success"
    """first-success: all envs stop when one succeeds (the paper); independent: each stops at its own success"""
    reward_file: Optional[str] = None
    """reward file to use instead of rewards/<suite>/<task_name>.py"""
    seed: int = 1
    """seed of torch, numpy and the envs"""
    video: bool = False
    """write one mp4 per env next to group.npz"""
    camera_size: int = 256
    """agentview render size in pixels (OpenVLA's LIBERO checkpoints saw 256)"""
    step_timeout: float = 60.0
    """seconds an env step may take before its worker counts as hung and is replaced"""
    device: Optional[str] = None
    """torch device; default cuda when available, else cpu (cpu only for `--model tiny`)"""
    output_dir: str = "runs"
    """the group is written to <output_dir>/<run name>/"""


SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# Step caps of OpenVLA's LIBERO evaluation, set from the longest demonstration of each suite.
EVAL_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
NUM_WAIT_STEPS = 10  # objects are dropped from ~7 cm at reset; let them settle as OpenVLA's evaluation does
WAIT_ACTION = np.array([0, 0, 0, 0, 0, 0, -1.0])
CONTROL_FREQ = 20

ACTION_DIM = 7
N_ACTION_BINS = 256
BINS = np.linspace(-1.0, 1.0, N_ACTION_BINS)
BIN_CENTERS = (BINS[:-1] + BINS[1:]) / 2.0
VOCAB_SIZE = 32000  # Llama-2 base vocabulary; the action bins are its last 256 ids
ACTION_TOKEN_BEGIN = VOCAB_SIZE - N_ACTION_BINS  # 31744
SPACE_TOKEN = 29871  # "▁", which OpenVLA's training prompts ended with

REWARDS_DIR = Path(__file__).resolve().parent / "rewards"
TINY_VLA_SOURCE = Path(__file__).resolve().parent / "tiny_vla"


# ----------------------------------------------------------------------------------------------------------
# Action tokens (OpenVLA's ActionTokenizer mapping)


def actions_to_action_tokens(normalized_actions: np.ndarray) -> np.ndarray:
    """Normalized actions in [-1, 1] -> token ids, the mapping OpenVLA was trained with."""
    bin_index = np.digitize(np.clip(normalized_actions, -1.0, 1.0), BINS)  # 1..256
    return VOCAB_SIZE - bin_index


def action_tokens_to_actions(tokens: np.ndarray) -> np.ndarray:
    """Token ids -> normalized actions (bin centers in [-1, 1])."""
    bin_index = np.clip(VOCAB_SIZE - np.asarray(tokens) - 1, 0, len(BIN_CENTERS) - 1)
    return BIN_CENTERS[bin_index]


def unnormalize_actions(normalized_actions: np.ndarray, action_stats: dict) -> np.ndarray:
    """Map [-1, 1] back to the dataset's [q01, q99] range where the mask says so (not the gripper)."""
    q01, q99 = np.asarray(action_stats["q01"]), np.asarray(action_stats["q99"])
    mask = np.asarray(action_stats.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
    return np.where(mask, 0.5 * (normalized_actions + 1.0) * (q99 - q01) + q01, normalized_actions)


def gripper_to_libero(actions: np.ndarray) -> np.ndarray:
    """OpenVLA emits the gripper in [0, 1] with 1 = open; LIBERO wants -1 = open, +1 = close."""
    actions = np.array(actions, dtype=np.float64, copy=True)
    actions[..., -1] = -np.sign(2.0 * actions[..., -1] - 1.0)
    return actions


def select_action_stats(norm_stats: dict, suite: str) -> dict:
    """The checkpoint's action statistics for `suite`, accepting both key spellings."""
    for key in (suite, f"{suite}_no_noops"):
        if key in norm_stats:
            return norm_stats[key]["action"]
    if len(norm_stats) == 1:
        key = next(iter(norm_stats))
        print(f"[rollout] warning: checkpoint has norm_stats only for {key!r}; using them for {suite}")
        return norm_stats[key]["action"]
    raise ValueError(
        f"the checkpoint has no action statistics for suite {suite!r} (keys: {sorted(norm_stats)}). "
        f"Use the checkpoint fine-tuned on {suite}, or pass --suite matching one of those keys."
    )


# ----------------------------------------------------------------------------------------------------------
# Images


def preprocess_image(agentview: np.ndarray, size: int = 224, center_crop_area: float = 0.9) -> np.ndarray:
    """OpenVLA's LIBERO image pipeline: rotate 180 degrees, JPEG round trip, resize, center crop.

    Upstream does this in TensorFlow (lanczos3 resize, then crop_and_resize); PIL's LANCZOS and BILINEAR
    resampling are the equivalents here.
    """
    image = Image.fromarray(np.ascontiguousarray(agentview[::-1, ::-1]))  # LIBERO renders upside down
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    image = Image.open(buffer).convert("RGB").resize((size, size), Image.LANCZOS)
    # The LIBERO checkpoints were trained with random crops of 90% area; evaluate on the center one.
    side = size * math.sqrt(center_crop_area)
    offset = (size - side) / 2.0
    image = image.resize((size, size), Image.BILINEAR, box=(offset, offset, offset + side, offset + side))
    return np.asarray(image)


# ----------------------------------------------------------------------------------------------------------
# The VLA policy


def build_prompt(instruction: str) -> str:
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


class VLAPolicy:
    """An OpenVLA-style model that samples and scores 7 action tokens for a batch of observations.

    Both sampling and scoring see only the 256 action-token logits, so the sampled distribution is exactly
    the one whose log-probability is trained.
    """

    def __init__(self, model, processor, action_stats: dict, device: torch.device):
        self.model, self.processor, self.action_stats, self.device = model, processor, action_stats, device
        self.dtype = next(model.parameters()).dtype
        tokenizer = processor.tokenizer
        self.space_token = SPACE_TOKEN if tokenizer.convert_ids_to_tokens(SPACE_TOKEN) == "▁" else None

    def prepare(self, images: np.ndarray, instruction: str) -> dict:
        """Model inputs for B images of one task: the same prompt, so no padding is needed."""
        pil_images = [Image.fromarray(image) for image in images]
        inputs = self.processor([build_prompt(instruction)] * len(pil_images), pil_images, return_tensors="pt")
        input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
        if self.space_token is not None and input_ids[0, -1] != self.space_token:
            # Upstream appends the token without extending the mask; that only works under SDPA.
            input_ids = torch.nn.functional.pad(input_ids, (0, 1), value=self.space_token)
            attention_mask = torch.nn.functional.pad(attention_mask, (0, 1), value=1)
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "pixel_values": inputs["pixel_values"].to(self.device, self.dtype),
        }

    @torch.no_grad()
    def act(self, images: np.ndarray, instruction: str, temperature: float = 1.0):
        """Sample (or with temperature 0, greedily decode) an action for each of B images.

        Returns token ids (B, 7), their log-probs summed over the 7 tokens (B,), and env actions (B, 7).
        """
        was_training = self.model.training
        self.model.eval()  # the Prismatic forward returns no KV cache in training mode
        inputs = self.prepare(images, instruction)
        out = self.model(**inputs, use_cache=True)
        batch, context_len = out.logits.shape[:2]
        attention_mask = torch.ones(batch, context_len, dtype=inputs["attention_mask"].dtype, device=self.device)
        tokens, log_probs = [], torch.zeros(batch, device=self.device)
        for k in range(ACTION_DIM):
            logp = action_log_softmax(out.logits[:, -1], temperature)
            if temperature > 0:
                choice = torch.multinomial(logp.exp(), 1)[:, 0]
            else:
                choice = logp.argmax(-1)
            log_probs += logp.gather(-1, choice[:, None])[:, 0]
            tokens.append(choice + ACTION_TOKEN_BEGIN)
            if k + 1 < ACTION_DIM:
                attention_mask = torch.nn.functional.pad(attention_mask, (0, 1), value=1)
                out = self.model.language_model(
                    input_ids=tokens[-1][:, None],
                    attention_mask=attention_mask,
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )
        self.model.train(was_training)
        tokens = torch.stack(tokens, dim=1).cpu().numpy()
        return tokens, log_probs.float().cpu().numpy(), self.tokens_to_env_actions(tokens)

    def log_prob(self, images: np.ndarray, instruction: str, tokens, temperature: float = 1.0) -> torch.Tensor:
        """Teacher-forced log pi(tokens | image, instruction), summed over the 7 tokens; differentiable."""
        tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=self.device)
        if tokens.min() < ACTION_TOKEN_BEGIN or tokens.max() >= VOCAB_SIZE:
            raise ValueError(f"action tokens must lie in [{ACTION_TOKEN_BEGIN}, {VOCAB_SIZE}); got {tokens.tolist()}")
        inputs = self.prepare(images, instruction)
        input_ids = torch.cat([inputs["input_ids"], tokens], dim=1)
        attention_mask = torch.nn.functional.pad(inputs["attention_mask"], (0, ACTION_DIM), value=1)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=inputs["pixel_values"]).logits
        # The image patches make logits longer than input_ids, so index from the end.
        logp = action_log_softmax(logits[:, -ACTION_DIM - 1 : -1], temperature)
        return logp.gather(-1, (tokens - ACTION_TOKEN_BEGIN)[..., None])[..., 0].sum(-1)

    def tokens_to_env_actions(self, tokens: np.ndarray) -> np.ndarray:
        return gripper_to_libero(unnormalize_actions(action_tokens_to_actions(tokens), self.action_stats))


def action_log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probs over the 256 action tokens only; greedy decoding scores at temperature 1."""
    action_logits = logits[..., ACTION_TOKEN_BEGIN:VOCAB_SIZE].float()
    return torch.log_softmax(action_logits / (temperature if temperature > 0 else 1.0), dim=-1)


def default_checkpoint(suite: str) -> str:
    if suite == "libero_90":
        raise ValueError("OpenVLA published no libero_90 checkpoint: pass --model <dir|hub id> or --model tiny")
    return f"openvla/openvla-7b-finetuned-{suite.replace('_', '-')}"


def tiny_vla_dir() -> Path:
    """Cache directory of the tiny VLA, keyed by the hash of its source so edits rebuild it."""
    digest = hashlib.sha256()
    for source in sorted(TINY_VLA_SOURCE.glob("*.py")):
        digest.update(source.read_bytes())
    cache = Path(os.environ.get("TGRPO_CACHE", Path.home() / ".cache" / "tgrpo"))
    return cache / f"tiny-vla-{digest.hexdigest()[:12]}"


def resolve_checkpoint(model: Optional[str], suite: str) -> tuple[str, bool]:
    """(path or hub id, is_tiny) for --model; builds the tiny VLA on first use."""
    if model is None:
        return default_checkpoint(suite), False
    if model == "tiny":
        path = tiny_vla_dir()
        if not path.exists():
            from tiny_vla import build_tiny_vla

            build_tiny_vla(str(path))
        return str(path), True
    config_file = Path(model) / "config.json"
    if config_file.exists():
        return model, json.loads(config_file.read_text()).get("model_type") == "tiny_vla"
    if Path(model).exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise FileNotFoundError(
            f"--model {model!r} is neither a checkpoint directory with a config.json nor a hub id "
            f"(owner/name). Pass a local OpenVLA checkpoint, a hub id such as {default_checkpoint('libero_goal')}, "
            "or --model tiny."
        )
    return model, False


def load_vla(model: Optional[str], suite: str, device: Optional[str] = None) -> VLAPolicy:
    """Load an OpenVLA checkpoint (dir or hub id) or the tiny VLA through the same code path."""
    from transformers import AutoModelForVision2Seq, AutoProcessor

    path, is_tiny = resolve_checkpoint(model, suite)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not is_tiny:
        raise RuntimeError(
            f"{path} is a 7B model and needs a CUDA GPU, but the device is {device}. "
            "To run the whole pipeline on a CPU, use the tiny VLA: --model tiny"
        )
    kwargs = {"torch_dtype": torch.bfloat16 if device.type == "cuda" else torch.float32}
    if device.type == "cuda" and not is_tiny:
        try:
            import flash_attn  # noqa: F401

            kwargs["attn_implementation"] = "flash_attention_2"
        except ImportError:
            pass
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        vla = AutoModelForVision2Seq.from_pretrained(path, trust_remote_code=True, low_cpu_mem_usage=True, **kwargs)
    except OSError as error:
        raise RuntimeError(
            f"could not load the VLA checkpoint {path!r}: {error}\n"
            "Download it first (e.g. `huggingface-cli download <id> --local-dir <dir>`) and pass --model <dir>, "
            "or use --model tiny."
        ) from error
    vla = vla.to(device)
    return VLAPolicy(vla, processor, select_action_stats(vla.config.norm_stats, suite), device)


# ----------------------------------------------------------------------------------------------------------
# LIBERO tasks and envs


@lru_cache(maxsize=None)
def get_suite(suite: str):
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    with contextlib.redirect_stdout(io.StringIO()):  # LIBERO prints its task order on every construction
        return benchmark.get_benchmark_dict()[suite]()


def get_task(suite: str, task_id: int):
    tasks = get_suite(suite)
    if not 0 <= task_id < tasks.n_tasks:
        raise ValueError(f"--task-id {task_id} is out of range: {suite} has tasks 0..{tasks.n_tasks - 1}")
    return tasks.get_task(task_id)


def get_init_states(suite: str, task_id: int) -> np.ndarray:
    """The task's 50 fixed init states (flattened MuJoCo states)."""
    get_task(suite, task_id)
    return get_suite(suite).get_task_init_states(task_id)


def task_bddl_path(task) -> str:
    return os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)


def make_env(bddl_file: str, render: bool = True, camera_size: int = 256, horizon: int = 1000):
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


def reset_env(env, init_state: np.ndarray, seed: int = 0) -> dict:
    """Reset to a fixed init state, then let the dropped objects settle.

    LIBERO's init states do not cover fixture placements (cabinet, stove, rack live in the model, not the
    state), and every reset re-samples them from numpy's global RNG. Reseeding first makes an episode a
    function of (init state, seed) alone, whichever worker runs it and whatever it ran before.
    """
    env.seed(seed)
    env.reset()
    obs = env.set_init_state(init_state)
    # A soft reset keeps state that the saved MuJoCo state does not cover: the solver's warm start and the
    # gripper's integrated command. Clear both so a reused env replays a fresh one exactly.
    env.sim.data.qacc_warmstart[:] = 0
    for robot in env.robots:
        robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)
    for _ in range(NUM_WAIT_STEPS):
        obs, _, _, _ = env.step(WAIT_ACTION)
    return obs


def articulation_qpos(sim_env, name: str) -> np.ndarray:
    """Positions of an object's hinge/slide joints (drawers, doors, knobs); free joints are skipped."""
    qpos = []
    for joint in sim_env.get_object(name).joints:
        address = sim_env.sim.model.get_joint_qpos_addr(joint)
        if not isinstance(address, tuple):
            qpos.append(sim_env.sim.data.qpos[address])
    return np.array(qpos, dtype=np.float64)


def build_reward_state(env, obs: dict, step: int, success: bool) -> dict:
    """The simulator state a reward function sees (schema: rewards/README.md). No pixels."""
    sim_env = env.env
    gripper = sim_env.robots[0].gripper
    objects = {}
    for name, object_state in sim_env.object_states_dict.items():
        geom = object_state.get_geom_state()
        kind = "object" if name in sim_env.objects_dict else "fixture" if name in sim_env.fixtures_dict else "site"
        quat = np.array(geom["quat"], dtype=np.float64)
        if kind != "site":
            quat = quat[[1, 2, 3, 0]]  # MuJoCo bodies are (w, x, y, z); sites and the eef are (x, y, z, w)
        entry = {"kind": kind, "pos": np.array(geom["pos"], dtype=np.float64), "quat": quat}
        if kind == "object":
            entry["grasped"] = bool(sim_env._check_grasp(gripper=gripper, object_geoms=sim_env.objects_dict[name]))
        if kind != "site":
            entry["joint_qpos"] = articulation_qpos(sim_env, name)
        objects[name] = entry
    goal = [
        {
            "predicate": predicate[0],
            "args": list(predicate[1:]),
            "satisfied": bool(eval_predicate_fn(predicate[0], *[sim_env.object_states_dict[a] for a in predicate[1:]])),
        }
        for predicate in sim_env.parsed_problem["goal_state"]
    ]
    gripper_qpos = np.array(obs["robot0_gripper_qpos"], dtype=np.float64)
    return {
        "step": int(step),
        "success": bool(success),
        "eef_pos": np.array(obs["robot0_eef_pos"], dtype=np.float64),
        "eef_quat": np.array(obs["robot0_eef_quat"], dtype=np.float64),
        "gripper_qpos": gripper_qpos,
        "gripper_opening": float(gripper_qpos[0] - gripper_qpos[1]),
        "objects": objects,
        "goal": goal,
    }


# ----------------------------------------------------------------------------------------------------------
# Env worker processes


@dataclass
class EnvSpec:
    """What a worker needs to (re)build its env."""

    bddl_file: str
    horizon: int
    camera_size: int = 256
    render: bool = True
    seed: int = 0


def observe(env, obs: dict, step: int, success: bool, render: bool) -> dict:
    image = preprocess_image(obs["agentview_image"]) if render else None
    return {"image": image, "state": build_reward_state(env, obs, step, success), "done": bool(success)}


def run_env_command(slot: dict, command: str, payload):
    """Execute one command on the env held in `slot`; shared by worker processes and serial mode."""
    if command == "reset":
        spec, init_state = payload
        if slot.get("spec") != spec:
            if slot.get("env") is not None:
                slot["env"].close()
            slot["env"], slot["spec"] = make_env(spec.bddl_file, spec.render, spec.camera_size, spec.horizon), spec
        slot["step"] = 0
        return observe(slot["env"], reset_env(slot["env"], init_state, spec.seed), 0, False, spec.render)
    if command == "step":
        obs, _, done, _ = slot["env"].step(payload)
        slot["step"] += 1
        return observe(slot["env"], obs, slot["step"], done, slot["spec"].render)
    raise ValueError(f"unknown env command {command!r}")


def env_worker(conn) -> None:
    """Worker process main loop: one env, commands in, observations (or an error text) out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process, which saves and closes us
    slot = {}
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:
            return
        if command == "close":
            os._exit(0)  # skip interpreter teardown: MuJoCo's EGL contexts raise noisy errors when garbage-collected
        try:
            conn.send(("ok", run_env_command(slot, command, payload)))
        except Exception:
            conn.send(("error", traceback.format_exc(limit=4)))


class EnvPool:
    """N persistent envs, each in its own process, reset together and stepped in parallel.

    A worker that crashes, raises or misses its deadline yields None for that env: its trajectory ends as a
    failure, a warning names the task and the error, and a fresh worker takes its place.
    `parallel=False` runs the envs one after another in this process (for benchmarks and debugging).
    """

    def __init__(self, num_envs: int, parallel: bool = True, step_timeout: float = 60.0, reset_timeout: float = 300.0):
        self.num_envs, self.parallel = num_envs, parallel
        self.step_timeout, self.reset_timeout = step_timeout, reset_timeout
        self.context = mp.get_context("spawn")  # never fork a process that holds torch threads or a GL context
        self.workers, self.conns, self.slots = [None] * num_envs, [None] * num_envs, [{} for _ in range(num_envs)]
        self.task_label, self.restarts = "", 0
        if parallel:
            for i in range(num_envs):
                self._start_worker(i)

    def _start_worker(self, i: int) -> None:
        parent_conn, child_conn = self.context.Pipe()
        worker = self.context.Process(target=env_worker, args=(child_conn,), daemon=True, name=f"libero-env-{i}")
        # Mesa's llvmpipe renders with one thread per core by default; with several workers per core, their
        # threads only contend (measured: 7.7 -> 10.2 steps/s for 4 workers on 2 cores). Spawn copies os.environ.
        user_setting = os.environ.get("LP_NUM_THREADS")
        os.environ["LP_NUM_THREADS"] = user_setting or str(max(1, (os.cpu_count() or 1) // self.num_envs))
        try:
            worker.start()
        finally:
            if user_setting is None:
                del os.environ["LP_NUM_THREADS"]
        child_conn.close()
        self.workers[i], self.conns[i] = worker, parent_conn

    def _replace_worker(self, i: int, reason: str) -> None:
        print(
            f"[rollout] warning: env {i} failed on task {self.task_label!r}: {reason.strip()}\n"
            f"[rollout] its trajectory ends as a failure; restarting the worker",
            file=sys.stderr,
        )
        self.restarts += 1
        if self.parallel:
            self.workers[i].kill()
            self.workers[i].join(timeout=5)
            self.conns[i].close()
            self._start_worker(i)
        else:
            self.slots[i] = {}

    def _death_note(self, i: int) -> str:
        self.workers[i].join(timeout=1)  # reap it, so the exit code (e.g. -9 for SIGKILL) is known
        return f"worker process died (exit code {self.workers[i].exitcode})"

    def _run(self, ids: list, command: str, payloads: list, timeout: float) -> list:
        if not self.parallel:
            results = []
            for i, payload in zip(ids, payloads):
                try:
                    results.append(run_env_command(self.slots[i], command, payload))
                except Exception:
                    self._replace_worker(i, traceback.format_exc(limit=4))
                    results.append(None)
            return results
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
            replies[i] = ("error", f"no reply within {timeout:.0f} s (hung worker; raise --step-timeout if slow)")
        results = []
        for i in ids:
            status, value = replies[i]
            if status != "ok":
                self._replace_worker(i, value)
                value = None
            results.append(value)
        return results

    def reset(self, ids: list, spec: EnvSpec, init_states, task_label: str = "") -> list:
        """Reset envs `ids` (wait steps included) to one shared init state, or to a list with one state per
        env; None marks a failed env."""
        self.task_label = task_label
        if isinstance(init_states, np.ndarray) and init_states.ndim == 1:
            init_states = [init_states] * len(ids)
        return self._run(ids, "reset", [(spec, state) for state in init_states], self.reset_timeout)

    def step(self, ids: list, actions: np.ndarray) -> list:
        """Step envs `ids` in parallel, one action each; None marks a failed env."""
        return self._run(ids, "step", list(actions), self.step_timeout)

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
        for slot in self.slots:
            if slot.get("env") is not None:
                slot["env"].close()


# ----------------------------------------------------------------------------------------------------------
# Reward files


ALLOWED_MODULES = ("math", "numpy", "numpy.linalg")
# numpy is a door to the file system and the process (np.lib.npyio.os, np.load, np.ctypeslib, ...), so a
# reward file may reach only these pure functions and constants through it.
NUMPY_API = {
    "abs", "absolute", "all", "allclose", "any", "arccos", "arcsin", "arctan", "arctan2", "arange", "argmax",
    "argmin", "argsort", "array", "asarray", "atleast_1d", "ceil", "clip", "concatenate", "cos", "cosh", "count_nonzero",
    "cross", "cumsum", "deg2rad", "degrees", "diff", "dot", "e", "einsum", "exp", "expm1", "eye", "fabs", "float32",
    "float64", "floor", "full", "hypot", "inf", "inner", "int64", "interp", "isclose", "isfinite", "isinf", "isnan",
    "linalg", "linspace", "log", "log10", "log1p", "log2", "logical_and", "logical_not", "logical_or", "matmul", "max",
    "maximum", "mean", "median", "min", "minimum", "nan", "ones", "ones_like", "outer", "pi", "power", "prod",
    "rad2deg", "radians", "round", "sign", "sin", "sinh", "sort", "sqrt", "square", "stack", "std", "sum", "tan", "tanh",
    "tile", "trace", "transpose", "var", "vstack", "hstack", "where", "zeros", "zeros_like",
}  # fmt: skip
LINALG_API = {"norm", "det", "inv", "solve", "eig", "eigh", "svd", "pinv", "matrix_rank"}
FORBIDDEN_ATTRIBUTES = {
    "tofile", "dump", "dumps", "ctypes", "gi_frame", "gi_code", "cr_frame", "ag_frame", "f_back", "f_globals",
    "f_locals", "f_builtins", "f_code", "tb_frame", "tb_next",
}  # fmt: skip
FORBIDDEN_NAMES = {
    "open", "exec", "eval", "compile", "__import__", "globals", "locals", "vars", "getattr", "setattr",
    "delattr", "input", "breakpoint", "help", "exit", "quit", "memoryview", "type", "object", "classmethod",
    "staticmethod", "property", "super", "dir",
}  # fmt: skip
SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in (
        "abs", "all", "any", "bool", "dict", "enumerate", "filter", "float", "int", "isinstance", "len", "list",
        "map", "max", "min", "pow", "range", "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip",
        "ValueError", "KeyError", "IndexError", "TypeError", "ZeroDivisionError", "Exception",
    )
}  # fmt: skip


class RewardFileError(Exception):
    """A reward file that is missing, rejected by the allow-list, or broken at run time."""


def module_api(module: str) -> Optional[set]:
    """The attributes a reward file may use on `module` (None: any public one)."""
    return {"math": None, "numpy": NUMPY_API, "numpy.linalg": LINALG_API}[module]


def imported_modules(tree: ast.Module, filename: str) -> dict:
    """{local name: module} of the file's imports; rejects any import outside the allow-list."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in ALLOWED_MODULES:
                    raise RewardFileError(
                        f"{filename}: line {node.lineno} imports {alias.name!r}; only {', '.join(ALLOWED_MODULES)} are allowed"
                    )
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module not in ALLOWED_MODULES or node.level:
                raise RewardFileError(
                    f"{filename}: line {node.lineno} imports {module!r}; only {', '.join(ALLOWED_MODULES)} are allowed"
                )
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if full in ALLOWED_MODULES:
                    aliases[alias.asname or alias.name] = full
                elif alias.name.startswith("_") or (module_api(module) is not None and alias.name not in module_api(module)):
                    raise RewardFileError(f"{filename}: line {node.lineno} imports {full!r}, which reward files may not use")
    return aliases


def check_reward_source(source: str, filename: str = "<reward>") -> ast.Module:
    """Reject a reward file unless it only uses math, numpy's pure functions and plain Python; never runs it."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        raise RewardFileError(f"{filename}: syntax error at line {error.lineno}: {error.msg}") from None
    modules = imported_modules(tree, filename)
    module_reads = set()  # ids of the Name nodes that are the `np` in `np.x`: the only allowed use of a module

    def module_of(node):
        if isinstance(node, ast.Name):
            return modules.get(node.id)
        if isinstance(node, ast.Attribute) and module_of(node.value) is not None:
            full = f"{module_of(node.value)}.{node.attr}"
            return full if full in ALLOWED_MODULES else None
        return None

    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_") or node.attr in FORBIDDEN_ATTRIBUTES:
                raise RewardFileError(f"{filename}: line {line} reads the forbidden attribute {node.attr!r}")
            if not isinstance(node.ctx, ast.Load):
                raise RewardFileError(f"{filename}: line {line} assigns to the attribute {node.attr!r}")
            owner = module_of(node.value)
            if owner is not None:
                module_reads.add(id(node.value))
                api = module_api(owner)
                if api is not None and node.attr not in api:
                    raise RewardFileError(f"{filename}: line {line} uses {owner}.{node.attr}, which reward files may not")
        elif isinstance(node, ast.Name) and (node.id in FORBIDDEN_NAMES or node.id.startswith("__")):
            raise RewardFileError(f"{filename}: line {line} uses the forbidden name {node.id!r}")
        elif isinstance(node, (ast.Global, ast.Nonlocal, ast.ClassDef, ast.AsyncFunctionDef, ast.Lambda, ast.Yield,
                               ast.YieldFrom, ast.Await)):  # fmt: skip
            raise RewardFileError(f"{filename}: line {line} uses {type(node).__name__}, which reward files may not")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in modules and id(node) not in module_reads:
            raise RewardFileError(
                f"{filename}: line {node.lineno} uses the module {node.id!r} as a value; only call its functions"
            )
    for node in tree.body:
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Assign, ast.AnnAssign, ast.Expr)):
            raise RewardFileError(
                f"{filename}: line {node.lineno}: top-level {type(node).__name__} statements are not allowed "
                "(only imports, constants and functions)"
            )
        if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
            raise RewardFileError(f"{filename}: line {node.lineno}: top-level expressions are not allowed")
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    if "compute_reward" not in functions or len(functions["compute_reward"].args.args) != 2:
        raise RewardFileError(f"{filename}: must define `def compute_reward(state, info) -> float` at top level")
    return tree


def restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    if name not in ALLOWED_MODULES or level:
        raise ImportError(f"reward files may only import {', '.join(ALLOWED_MODULES)}, not {name!r}")
    return __import__(name, globals, locals, fromlist, level)


def compile_reward_fn(source: str, filename: str = "<reward>") -> Callable:
    """Check `source` against the allow-list, then execute it with a reduced set of builtins."""
    code = compile(check_reward_source(source, filename), filename, "exec")
    namespace = {"__builtins__": {**SAFE_BUILTINS, "__import__": restricted_import}, "__name__": "reward_file"}
    exec(code, namespace)
    return namespace["compute_reward"]


@dataclass
class RewardFn:
    """A loaded reward file: call it as fn(state, info) -> float."""

    fn: Callable
    path: str
    sha256: str

    def __call__(self, state: dict, info: dict) -> float:
        return self.fn(state, info)


def reward_file_path(suite: str, task_name: str) -> Path:
    return REWARDS_DIR / suite / f"{task_name}.py"


def gen_reward_command(suite: str, task_name: str) -> str:
    names = [task.name for task in get_suite(suite).tasks]
    task_id = names.index(task_name) if task_name in names else "<id>"
    return f"python gen_reward.py --suite {suite} --task-id {task_id} --provider anthropic --model <model name>"


def load_reward_fn(suite: str, task_name: str, path: Optional[str] = None) -> RewardFn:
    """Load rewards/<suite>/<task_name>.py (or `path`) through the AST allow-list."""
    path = Path(path) if path is not None else reward_file_path(suite, task_name)
    if not path.is_file():
        raise RewardFileError(
            f"no reward file at {path}. Generate it with: {gen_reward_command(suite, task_name)} "
            "(or pass --reward-file <path>)"
        )
    source = path.read_text()
    try:
        fn = compile_reward_fn(source, str(path))
    except RewardFileError as error:
        raise RewardFileError(
            f"{error}\nFix the file, or regenerate it with: {gen_reward_command(suite, task_name)} --overwrite"
        ) from None
    return RewardFn(fn, str(path), hashlib.sha256(source.encode()).hexdigest())


def describe_state_keys(state: dict) -> str:
    objects = ", ".join(sorted(state.get("objects", {})))
    return f"state keys {sorted(state)}; objects [{objects}]"


def evaluate_reward(reward_fn: RewardFn, state: dict, info: dict, env_index: int) -> float:
    """Call the reward file; a crash or a non-finite value stops the run instead of inventing a reward."""
    try:
        value = reward_fn(state, info)
        reward = float(value)
    except Exception as error:
        raise RewardFileError(
            f"{reward_fn.path} raised {type(error).__name__}: {error} at step {state['step']} (env {env_index}); "
            f"{describe_state_keys(state)}"
        ) from error
    if not math.isfinite(reward):
        raise RewardFileError(
            f"{reward_fn.path} returned {value!r} at step {state['step']} (env {env_index}); "
            f"{describe_state_keys(state)}"
        )
    return reward


# ----------------------------------------------------------------------------------------------------------
# One group: N trajectories from one init state


@dataclass
class Group:
    """N trajectories of one task from one init state, padded to the longest; `mask` marks real steps."""

    suite: str
    task_name: str
    instruction: str
    init_state_id: int
    images: np.ndarray  # (N, T, H, W, 3) uint8: the observation each action was chosen from
    tokens: np.ndarray  # (N, T, 7) int64 action token ids
    log_probs: np.ndarray  # (N, T) float32, sampling log-probs summed over the 7 tokens
    rewards: np.ndarray  # (N, T) float32 dense rewards from the reward file
    mask: np.ndarray  # (N, T) bool, True where the step exists
    success: np.ndarray  # (N,) bool
    lengths: np.ndarray  # (N,) int
    failed: np.ndarray  # (N,) bool: the env crashed or hung
    timing: dict = field(default_factory=dict)  # seconds: simulation, policy, reward, other, total

    @property
    def returns(self) -> np.ndarray:
        return (self.rewards * self.mask).sum(axis=1)

    def save(self, path: str) -> None:
        arrays = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        meta = {k: v for k, v in vars(self).items() if not isinstance(v, np.ndarray)}
        np.savez(path, **arrays, meta=json.dumps(meta))


def still_running(live: np.ndarray, success: np.ndarray, termination: str) -> np.ndarray:
    """first-success (the paper): one success stops every env; independent: only the successful one."""
    if termination == "first-success" and success.any():
        return np.zeros_like(live)
    return live & ~success


def collect_group(
    policy: VLAPolicy,
    pool: EnvPool,
    suite: str,
    task_id: int,
    init_state_id: int,
    reward_fn: RewardFn,
    max_steps: int = 200,
    temperature: float = 1.0,
    termination: str = "first-success",
    camera_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    init_state: Optional[np.ndarray] = None,
) -> Group:
    """Run the pool's N envs from one init state with the policy; see `Group` for what comes back.

    `init_state` (a flattened MuJoCo state) overrides the task's fixed init state `init_state_id`.
    """
    if termination not in ("first-success", "independent"):
        raise ValueError(f"unknown termination {termination!r}; use first-success or independent")
    if max_steps < 1:
        raise ValueError(f"--max-steps {max_steps}: a trajectory needs at least one step")
    task = get_task(suite, task_id)
    n = pool.num_envs
    spec = EnvSpec(task_bddl_path(task), env_horizon(max_steps), camera_size, True, seed)
    timing = dict.fromkeys(("simulation", "policy", "reward"), 0.0)
    start = time.perf_counter()

    if init_state is None:
        init_state = get_init_states(suite, task_id)[init_state_id]
    results = pool.reset(list(range(n)), spec, init_state, task.name)
    timing["simulation"] += time.perf_counter() - start
    live = np.array([r is not None for r in results])
    if not live.any():
        raise RuntimeError(
            f"all {n} env workers failed to reset on {suite}/{task.name} (see the warnings above); "
            "if they died at start-up, run `python rollout.py --model tiny --num-envs 1` to see the error"
        )
    failed = ~live
    image_shape = next((r["image"].shape for r in results if r is not None), (224, 224, 3))
    current = [r["image"] if r is not None else np.zeros(image_shape, np.uint8) for r in results]
    infos = [
        {"suite": suite, "task_name": task.name, "instruction": task.language, "max_steps": max_steps,
         "initial": r["state"] if r is not None else None}
        for r in results
    ]  # fmt: skip
    success, lengths = np.zeros(n, bool), np.zeros(n, np.int64)
    images, tokens, log_probs, rewards, masks = [], [], [], [], []

    for t in tqdm(range(max_steps), desc=f"{task.name[:40]} steps", leave=False, disable=not progress):
        ids = np.flatnonzero(live)
        if len(ids) == 0:
            break
        images.append(np.stack(current))
        tick = time.perf_counter()
        step_tokens, step_logp, actions = policy.act(images[-1][ids], task.language, temperature)
        timing["policy"] += time.perf_counter() - tick

        tokens.append(np.zeros((n, ACTION_DIM), np.int64))
        log_probs.append(np.zeros(n, np.float32))
        rewards.append(np.zeros(n, np.float32))
        masks.append(np.zeros(n, bool))
        tokens[-1][ids], log_probs[-1][ids] = step_tokens, step_logp

        tick = time.perf_counter()
        results = pool.step(list(ids), actions)
        timing["simulation"] += time.perf_counter() - tick

        tick = time.perf_counter()
        for i, result in zip(ids, results):
            if result is None:
                live[i], failed[i] = False, True
                continue
            rewards[-1][i] = evaluate_reward(reward_fn, result["state"], infos[i], i)
            masks[-1][i], lengths[i], current[i] = True, t + 1, result["image"]
            success[i] |= result["done"]
        timing["reward"] += time.perf_counter() - tick

        live = still_running(live, success, termination)

    timing["total"] = time.perf_counter() - start
    timing["other"] = timing["total"] - timing["simulation"] - timing["policy"] - timing["reward"]
    return Group(
        suite=suite,
        task_name=task.name,
        instruction=task.language,
        init_state_id=init_state_id,
        images=np.stack(images, axis=1),
        tokens=np.stack(tokens, axis=1),
        log_probs=np.stack(log_probs, axis=1),
        rewards=np.stack(rewards, axis=1),
        mask=np.stack(masks, axis=1),
        success=success,
        lengths=lengths,
        failed=failed,
        timing=timing,
    )


def save_videos(group: Group, directory: Path) -> list:
    """One mp4 per env, of the frames the policy saw."""
    paths = []
    for i in range(len(group.lengths)):
        path = directory / f"env{i}.mp4"
        frames = group.images[i, : max(1, group.lengths[i])]
        imageio.mimwrite(path, list(frames), fps=CONTROL_FREQ, macro_block_size=1)
        paths.append(path)
    return paths


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(args: Args) -> None:
    task = get_task(args.suite, args.task_id)
    if not 0 <= args.init_state_id < len(get_init_states(args.suite, args.task_id)):
        raise ValueError(f"--init-state-id {args.init_state_id} is out of range: LIBERO tasks have init states 0..49")
    reward_fn = load_reward_fn(args.suite, task.name, args.reward_file)
    seed_everything(args.seed)
    pool = EnvPool(args.num_envs, step_timeout=args.step_timeout)  # workers boot while the model loads
    try:
        policy = load_vla(args.model, args.suite, args.device)
        group = collect_group(
            policy, pool, args.suite, args.task_id, args.init_state_id, reward_fn, args.max_steps,
            args.temperature, args.termination, args.camera_size, args.seed, progress=True,
        )  # fmt: skip
    finally:
        pool.close()

    run_dir = Path(args.output_dir) / f"rollout__{args.suite}__task{args.task_id}__{args.seed}__{int(time.time())}"
    run_dir.mkdir(parents=True, exist_ok=True)
    group.save(str(run_dir / "group.npz"))
    videos = save_videos(group, run_dir) if args.video else []

    print(f"task {args.suite}/{args.task_id}: {task.language} (init state {args.init_state_id})")
    for i in range(args.num_envs):
        status = "crashed" if group.failed[i] else "success" if group.success[i] else "failure"
        print(f"  env {i}: {status:8s} return {group.returns[i]:9.3f}  length {group.lengths[i]}")
    steps = int(group.mask.sum())
    split = "  ".join(f"{k} {v / group.timing['total']:.0%}" for k, v in group.timing.items() if k != "total")
    print(f"{steps} env steps in {group.timing['total']:.1f} s = {steps / group.timing['total']:.1f} steps/s ({split})")
    print(f"saved {run_dir / 'group.npz'}" + (f" and {len(videos)} videos" if videos else ""))


if __name__ == "__main__":
    main(tyro.cli(Args))
