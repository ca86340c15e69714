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
from typing import Callable, Literal, Optional, get_args

import imageio
import numpy as np
import simplejpeg
import torch
import torch._dynamo  # noqa: F401  (loads triton's LLVM before Mesa's EGL does: the other order segfaults)
import tyro
from libero.libero import benchmark, get_libero_path
from libero.libero.envs import OffScreenRenderEnv
from libero.libero.envs.env_wrapper import ControlEnv
from libero.libero.envs.predicates import eval_predicate_fn
from PIL import Image
from tqdm import tqdm

import rewards
from rewards import RewardFileError


Suite = Literal["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"]
SUITES = get_args(Suite)
# Step caps of OpenVLA's LIBERO evaluation, set from the longest demonstration of each suite.
EVAL_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
# Training caps: the paper's 200 for spatial/object/goal; Long's demonstrations run up to 505 steps.
TRAIN_MAX_STEPS = {"libero_spatial": 200, "libero_object": 200, "libero_goal": 200, "libero_10": 520, "libero_90": 400}
VideoChoice = Literal["none", "failures", "all"]


@dataclass
class Args:
    suite: Suite = "libero_goal"
    """LIBERO suite (libero_10 is "Long")"""
    task_ids: tuple[int, ...] = (8,)
    """tasks of the suite to collect one group each for (0-9; 0-89 for libero_90)"""
    init_state_id: int = 0
    """which of the task's 50 fixed init states all envs start from"""
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
    """seed of torch, numpy and the envs' fixture placements"""
    video: VideoChoice = "none"
    """write an mp4 of the frames the policy saw for no env, the envs that failed, or all envs"""
    camera_size: int = 256
    """agentview render size in pixels (OpenVLA's LIBERO checkpoints saw 256)"""
    step_timeout: float = 60.0
    """seconds an env step may take before its worker counts as hung and is replaced"""
    device: Optional[str] = None
    """torch device; default cuda when available, else cpu (cpu only for `--model tiny`)"""
    output_dir: str = "runs"
    """where a run's outputs go: <output-dir>/<run name>/"""


class UsageError(ValueError):
    """Bad user input: the scripts print it as one line naming the flag, without a traceback."""


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
# Images
#
# OpenVLA's LIBERO checkpoints only ever saw frames prepared by TensorFlow ops (JPEG round trip, lanczos3
# resize, crop_and_resize). The helpers below redo each op in numpy, in float32 and in TF's order of
# operations; tests/test_image_pipeline.py holds the result to references made with TensorFlow itself.

JPEG_QUALITY = 95  # tf.image.encode_jpeg's default, which OpenVLA's evaluation uses
# uint8 -> float32 in [0, 1] exactly as tf.image.convert_image_dtype computes it: value * float32(1/255).
UINT8_TO_UNIT_FLOAT = np.arange(256, dtype=np.float32) * np.float32(1.0 / 255)
UINT8_TO_UNIT_FLOAT.setflags(write=False)


def jpeg_round_trip(image: Image.Image) -> np.ndarray:
    """JPEG encode and decode, with the same pixels as TF's encode_jpeg + decode_image.

    PIL's encoder writes the same entropy-coded data as TF's (quality 95, 4:2:0 chroma). The decoders
    differ: TF uses libjpeg's fast integer IDCT with smooth chroma upsampling, which PIL cannot select and
    simplejpeg can.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling="4:2:0")
    return simplejpeg.decode_jpeg(buffer.getvalue(), colorspace="RGB", fastdct=True, fastupsample=False)


def lanczos3_kernel(distance: np.ndarray) -> np.ndarray:
    """TF's lanczos3 kernel, evaluated in float32 with its terms in TF's order."""
    x = np.abs(distance).astype(np.float32)
    pi, radius = np.float32(np.pi), np.float32(3)
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = radius * np.sin(pi * x) * np.sin(pi * x / radius) / (pi * pi * x * x)
    weight = np.where(x <= 1e-3, np.float32(1), weight)  # sinc's limit at 0
    return np.where(x > radius, np.float32(0), weight).astype(np.float32)


@lru_cache(maxsize=None)
def lanczos3_resize_matrix(input_size: int, output_size: int) -> np.ndarray:
    """Weights of tf.image.resize(method="lanczos3", antialias=True) along one axis, (output, input).

    Built once per shape the way TF builds its spans: sample points at pixel centers in float32, the kernel
    stretched by the shrink factor (that is the antialias), each row normalized to sum to one.
    """
    inv_scale = np.float32(1.0 / np.float64(np.float32(output_size) / np.float32(input_size)))
    kernel_scale = max(inv_scale, np.float32(1))  # stretch the kernel only when shrinking
    support = np.float32(3) * kernel_scale
    matrix = np.zeros((output_size, input_size), np.float32)
    for row in range(output_size):
        center = np.float32(row + 0.5) * inv_scale
        first = max(math.ceil(center - support - np.float32(0.5)), 0)
        last = min(math.floor(center + support - np.float32(0.5)), input_size - 1)
        offsets = np.arange(first, last + 1, dtype=np.float32) + np.float32(0.5) - center
        weights = lanczos3_kernel(offsets * (np.float32(1) / kernel_scale))
        total = np.cumsum(weights, dtype=np.float32)[-1]  # summed in order, as TF does
        matrix[row, first : last + 1] = weights * (np.float32(1) / total)
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=None)
def lanczos3_resize_blocks(input_size: int, output_size: int, rows_per_block: int = 8) -> tuple:
    """The resize matrix cut into bands: (output rows, the input rows they read, their weights) per block.

    Multiplying band by band skips the zeros (each output reads ~9 of 256 inputs) and keeps every product
    small enough for OpenBLAS to compute it on the calling thread. One large product wakes its helper
    thread, which then spins for ~0.1 s of CPU after each call (measured): in an env worker, most of a
    core lost at every step.
    """
    matrix = lanczos3_resize_matrix(input_size, output_size)
    blocks = []
    for first in range(0, output_size, rows_per_block):
        weights = matrix[first : first + rows_per_block]
        used = np.flatnonzero(weights.any(axis=0))
        inputs = slice(used[0], used[-1] + 1)
        blocks.append((slice(first, first + len(weights)), inputs, np.ascontiguousarray(weights[:, inputs])))
    return tuple(blocks)


def resize_rows(values: np.ndarray, output_size: int) -> np.ndarray:
    """Lanczos3-resize a float32 (rows, n) array along its rows: `lanczos3_resize_matrix @ values`."""
    resized = np.empty((output_size, values.shape[1]), np.float32)
    for outputs, inputs, weights in lanczos3_resize_blocks(values.shape[0], output_size):
        np.matmul(weights, values[inputs], out=resized[outputs])
    return resized


def resize_lanczos3(image: np.ndarray, size: int) -> np.ndarray:
    """tf.image.resize to (size, size) with lanczos3 and antialias, then round, clip and cast to uint8.

    Both passes stay in float32 until the final rounding, as in TF (PIL rounds to uint8 between them).
    """
    height, width, channels = image.shape
    # Rows first, as TF (the other order moves a few more values across a rounding edge), then columns,
    # with the columns brought to the front so that both passes are the same row operation.
    resized = resize_rows(image.reshape(height, width * channels).astype(np.float32), size)
    resized = resize_rows(resized.reshape(size, width, channels).transpose(1, 0, 2).reshape(width, -1), size)
    np.round(resized, out=resized)  # half to even, as tf.round
    np.clip(resized, 0, 255, out=resized)
    return resized.reshape(size, size, channels).transpose(1, 0, 2).astype(np.uint8, order="C")


@lru_cache(maxsize=None)
def center_crop_sampling(size: int, channels: int, area: float) -> tuple:
    """Where tf.image.crop_and_resize samples the centered box of `area` (a fraction of the image) to make
    a (size, size) output: the source rows before and after each output row and the fraction of the way
    between them; the same for columns, as indices into a row of `size * channels` values.

    TF maps the box's edges onto the outer pixel centers (the `size - 1` terms) and computes in float32.
    """
    side = np.sqrt(np.float32(area))
    start = (np.float32(1) - side) / np.float32(2)
    end = start + side
    step = (end - start) * np.float32(size - 1) / np.float32(size - 1)
    positions = start * np.float32(size - 1) + np.arange(size, dtype=np.float32) * step
    before, after = np.floor(positions).astype(np.int64), np.ceil(positions).astype(np.int64)
    fraction = positions - before.astype(np.float32)
    sampling = (
        before,
        after,
        fraction[:, None],
        (before[:, None] * channels + np.arange(channels)).ravel(),
        (after[:, None] * channels + np.arange(channels)).ravel(),
        np.repeat(fraction, channels)[None, :],
    )
    for array in sampling:
        array.setflags(write=False)
    return sampling


def center_crop(image: np.ndarray, area: float) -> np.ndarray:
    """OpenVLA's center crop: crop_and_resize (bilinear) of the centered box of `area` back to the image's
    size, then convert_image_dtype to uint8, which scales by 255.5 and truncates (PIL rounds)."""
    size, _, channels = image.shape
    row_before, row_after, row_fraction, col_before, col_after, col_fraction = center_crop_sampling(
        size, channels, area
    )
    rows = image.reshape(size, size * channels)
    # TF's arithmetic in its order, every step rounded to float32: between columns, then between rows
    # (interpolating every source row once gives the same numbers as TF's per-output-row loop).
    # In place, because fresh arrays of this size cost page faults on every frame.
    left = UINT8_TO_UNIT_FLOAT.take(rows.take(col_before, axis=1))
    across = UINT8_TO_UNIT_FLOAT.take(rows.take(col_after, axis=1))
    across -= left
    across *= col_fraction
    across += left
    top, bottom = across.take(row_before, axis=0), across.take(row_after, axis=0)
    bottom -= top
    bottom *= row_fraction
    bottom += top
    np.clip(bottom, 0, 1, out=bottom)
    bottom *= np.float32(255.5)
    return bottom.astype(np.uint8).reshape(size, size, channels)


def preprocess_image(agentview: np.ndarray, size: int = 224, center_crop_area: float = 0.9) -> np.ndarray:
    """OpenVLA's LIBERO image pipeline: rotate 180 degrees, JPEG round trip, lanczos3 resize, center crop.

    Upstream's TensorFlow pipeline without TensorFlow: equal to it but for about 1 value in 100,000, which
    is 1 gray level off (float32 sums in another order). tests/test_image_pipeline.py checks it.
    """
    image = Image.fromarray(agentview).transpose(Image.Transpose.ROTATE_180)  # LIBERO renders upside down
    image = resize_lanczos3(jpeg_round_trip(image), size)
    # The LIBERO checkpoints were trained with random crops of 90% area; evaluate on the center one.
    return center_crop(image, center_crop_area)


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
        raise UsageError("OpenVLA published no libero_90 checkpoint: pass --model <dir|hub id> or --model tiny")
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
        try:
            return model, json.loads(config_file.read_text()).get("model_type") == "tiny_vla"
        except ValueError as error:
            raise UsageError(f"--model {model}: {config_file} is not valid JSON ({error}); copy or download the "
                             "checkpoint again") from None
    if Path(model).exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise UsageError(
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
    """What a worker needs to (re)build its rendering env."""

    bddl_file: str
    horizon: int
    camera_size: int = 256
    seed: int = 0


def observe(env, obs: dict, step: int, success: bool) -> dict:
    image = preprocess_image(obs["agentview_image"])
    return {"image": image, "state": build_reward_state(env, obs, step, success), "done": bool(success)}


def run_env_command(held: dict, command: str, payload, in_reward=None):
    """Execute one command on the env in `held`; shared by worker processes and serial mode.

    reset: (EnvSpec, init state, RewardJob or None); step: an action. With a RewardJob, every step's reward
    is computed here, confined by rewards.call_reward; `in_reward` (a shared flag) tells the parent that a
    death or a hang happened inside reward code.
    """
    if command == "reset":
        spec, init_state, job = payload
        if held.get("spec") != spec:
            if held.get("env") is not None:
                held["env"].close()
            held["env"] = make_env(spec.bddl_file, render=True, camera_size=spec.camera_size, horizon=spec.horizon)
            held["spec"] = spec
        held["step"], held["job"] = 0, job
        result = observe(held["env"], reset_env(held["env"], init_state, spec.seed), step=0, success=False)
        if job is not None:
            if held.get("reward_source") != (job.path, job.source):
                limits = dict(cpu_seconds=job.cpu_seconds, memory_mb=job.memory_mb, in_reward=in_reward)
                held["reward_fn"] = rewards.compile_reward_fn(job.source, job.path, **limits)
                held["reward_source"] = (job.path, job.source)
            held["info"] = rewards.build_reward_info(
                suite=job.suite, task_name=job.task_name, instruction=job.instruction, max_steps=job.max_steps,
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
                held["reward_fn"], result["state"], held["info"], cpu_seconds=job.cpu_seconds,
                memory_mb=job.memory_mb, in_reward=in_reward,
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
                raise RewardFileError(f"{value} (env {i})")
            if status != "ok" and self.in_reward[i] is not None and self.in_reward[i].value:
                job, worker = self.reward_job, self.workers[i]
                exitcode = None if worker.is_alive() else worker.exitcode
                raise rewards.reward_process_died(
                    job.path, exitcode, where=f"(env {i})", cpu_seconds=job.cpu_seconds, memory_mb=job.memory_mb
                )
        results = []
        for i in ids:
            status, value = replies[i]
            if status != "ok":
                self._replace_worker(i, value)
                value = None
            results.append(value)
        return results

    def reset(self, ids: list, spec: EnvSpec, init_states, task_label: str = "", reward_job=None) -> list:
        """Reset envs `ids` (wait steps included) to one shared init state, or to a list with one state per
        env; None marks a failed env. With a RewardJob, each later step's result carries its "reward"."""
        self.task_label, self.reward_job = task_label, reward_job
        if isinstance(init_states, np.ndarray) and init_states.ndim == 1:
            init_states = [init_states] * len(ids)
        return self._run(ids, "reset", [(spec, state, reward_job) for state in init_states], self.reset_timeout)

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


@dataclass(frozen=True)
class RewardJob:
    """What a worker needs to score its env's steps: the file, the run's facts for `info`, and the limits."""

    path: str
    source: str
    suite: str
    task_name: str
    instruction: str
    max_steps: int
    cpu_seconds: float = 5.0
    memory_mb: int = 1024


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
    seed: int = 0,
    reward_limits: tuple = (5.0, 1024),
    progress: bool = False,
    init_state: Optional[np.ndarray] = None,
) -> Group:
    """Run the pool's N envs from one init state with the policy; see `Group` for what comes back.

    The rewards are computed in the env workers (`reward_limits`: CPU seconds and MB per call).
    `init_state` (a flattened MuJoCo state) overrides the task's fixed init state `init_state_id`.
    """
    if termination not in ("first-success", "independent"):
        raise UsageError(f"--termination {termination!r}: use first-success or independent")
    if max_steps < 1:
        raise UsageError(f"--max-steps {max_steps}: a trajectory needs at least one step")
    task = get_task(suite, task_id)
    n = pool.num_envs
    spec = EnvSpec(task_bddl_path(task), env_horizon(max_steps), camera_size, seed)
    job = RewardJob(reward_file.path, reward_file.source, suite, task.name, task.language, max_steps, *reward_limits)
    timing = dict.fromkeys(("simulation", "policy"), 0.0)  # simulation includes the workers' reward calls
    start = time.perf_counter()

    if init_state is None:
        init_state = get_init_states(suite, task_id)[init_state_id]
    results = pool.reset(list(range(n)), spec, init_state, task.name, reward_job=job)
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
        step_tokens, step_logp, actions = policy.act(images[-1][ids], task.language, temperature)
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
        instruction=task.language,
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
        raise UsageError(f"--device {device}: no CUDA GPU is visible here; use --device cpu (with --model tiny)")
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: use cpu or cuda")


def check_args(args: Args) -> None:
    for task_id in args.task_ids:
        get_task(args.suite, task_id)
    problems = [
        (not 0 <= args.init_state_id < 50, "--init-state-id", args.init_state_id, "LIBERO tasks have init states 0..49"),
        (args.num_envs < 1, "--num-envs", args.num_envs, "use 1 or more"),
        (args.max_steps is not None and args.max_steps < 1, "--max-steps", args.max_steps, "use 1 or more"),
        (args.temperature < 0, "--temperature", args.temperature, "use 0 (greedy) or more"),
        (args.step_timeout <= 0, "--step-timeout", args.step_timeout, "use a positive number of seconds"),
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
    reward_files = {task_id: read_reward_file(args.suite, task.name, args.reward_file) for task_id, task in tasks.items()}
    seed_everything(args.seed)
    pool = EnvPool(args.num_envs, step_timeout=args.step_timeout)  # workers boot while the model loads
    try:
        policy = load_vla(args.model, args.suite, args.device)
        for task_id, task in tasks.items():
            group = collect_group(
                policy, pool, suite=args.suite, task_id=task_id, init_state_id=args.init_state_id,
                reward_file=reward_files[task_id], max_steps=max_steps, temperature=args.temperature,
                termination=args.termination, camera_size=args.camera_size, seed=args.seed, progress=True,
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
