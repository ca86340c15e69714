"""The OpenVLA policy: action tokens, batched sampling and scoring of the 7 action tokens, and loading any
OpenVLA-style checkpoint (or the tiny VLA) on any device, with the library and remote-code checks that make a
load fail early and clearly.

The scripts use the VLA only through what this file provides (README, "Swapping the VLA"), so another VLA is
another version of this one file:
- `preprocess_image(frame)`: the policy's view of a rendered agentview frame, a module-level function; the scripts
  hand it to libero_envs.EnvPool, whose workers apply it in parallel with the envs.
- `resolve_checkpoint(model, suite)`: checks --model before anything loads; `load_vla(model, suite, device, dtype,
  fast)` -> VLAPolicy (fast: the static-shape step of fast_step.py, CUDA graphs on CUDA); `DtypeChoice`, `ACTION_DIM`.
- `VLAPolicy.act(images, instructions, temperature, generators)` -> (action tokens (B, 7), their summed log-probs
  (B,), env actions (B, 7)): sampling and action decoding in one batched call, one instruction per image.
- `VLAPolicy.log_prob(images, instruction, tokens, temperature)` -> (B,): the differentiable log-prob of the same
  distribution `act` samples from, for B images of one instruction.
- `VLAPolicy.model` (the torch module tgrpo.py wraps with a LoRA adapter) and `VLAPolicy.device`; `VLAPolicy.fast`
  (which step `act` runs) and `VLAPolicy.fast_step` (None frees the fast step's KV cache and graphs).
"""

import hashlib
import json
import logging
import math
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional, get_args

import numpy as np
import torch
from PIL import Image

from cli import UsageError, base_suite
from openvla_image import preprocess_image  # noqa: F401  (the policy's view of a frame: the scripts give it to EnvPool)
from openvla_policy.fast_step import FastActionStep
from openvla_policy.prismatic import base_vla, multimodal_embeddings, multimodal_mask

ACTION_DIM = 7
N_ACTION_BINS = 256
BINS = np.linspace(-1.0, 1.0, N_ACTION_BINS)
BIN_CENTERS = (BINS[:-1] + BINS[1:]) / 2.0
VOCAB_SIZE = 32000  # Llama-2 base vocabulary; the action bins are its last 256 ids
ACTION_TOKEN_BEGIN = VOCAB_SIZE - N_ACTION_BINS  # 31744
ACTION_ROWS = slice(ACTION_TOKEN_BEGIN, VOCAB_SIZE)  # the action tokens' rows of the output layer
SPACE_TOKEN = 29871  # "▁", which OpenVLA's training prompts ended with

TINY_VLA_SOURCE = Path(__file__).resolve().parent.parent / "tiny_vla"

# Importing torch.utils.cpp_extension (peft does) logs "No CUDA runtime is found" on a machine that has nvcc but
# no GPU, once per process. Nothing here builds C++ extensions, so there is nothing to act on.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


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
        print(f"[openvla_policy] warning: checkpoint has norm_stats only for {key!r}; using them for {suite}")
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

    def __init__(self, model, processor, action_stats: dict, device: torch.device, fast: bool = False):
        self.model, self.processor, self.action_stats, self.device = model, processor, action_stats, device
        self.dtype = next(model.parameters()).dtype
        self.fast, self.fast_step = fast, None  # fast: the static-shape step of fast_step.py (CUDA graphs on CUDA)
        self.normalization = None  # (mean, std) on the device once checked against the processor; False: failed
        tokenizer = processor.tokenizer
        self.space_token = SPACE_TOKEN if tokenizer.convert_ids_to_tokens(SPACE_TOKEN) == "▁" else None

    def prepare(self, images: np.ndarray, instructions) -> tuple[dict, torch.Tensor]:
        """Model inputs for B images, each with its own instruction (or one `str` for all), and each row's prompt
        length. Prompts of different lengths are padded on the right: the real tokens keep positions 0..L-1."""
        instructions = [instructions] * len(images) if isinstance(instructions, str) else list(instructions)
        prompts = [build_prompt(instruction) for instruction in instructions]
        text = self.processor.tokenizer(prompts, padding=True, return_tensors="pt")  # what the processor calls
        input_ids, attention_mask = text["input_ids"], text["attention_mask"]
        lengths = attention_mask.sum(1)
        if self.space_token is not None:
            # Upstream appends it without extending the mask: that fails under eager attention (SDPA and
            # flash-attention 2 drop an all-ones mask in transformers 4.40.1, so it goes unnoticed there).
            rows = torch.arange(len(prompts))
            lacking = input_ids[rows, lengths - 1] != self.space_token
            input_ids = torch.nn.functional.pad(input_ids, (0, 1), value=self.processor.tokenizer.pad_token_id)
            attention_mask = torch.nn.functional.pad(attention_mask, (0, 1), value=0)
            input_ids[rows[lacking], lengths[lacking]] = self.space_token
            attention_mask[rows[lacking], lengths[lacking]] = 1
            lengths = lengths + lacking
            input_ids, attention_mask = input_ids[:, : lengths.max()], attention_mask[:, : lengths.max()]
        inputs = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "pixel_values": self.pixel_values(images),
        }
        return inputs, lengths.to(self.device)

    def pixel_values(self, images: np.ndarray) -> torch.Tensor:
        """The processor's pixel values of uint8 (B, H, W, 3) frames. Frames already at the processor's size need only
        scaling and each tower's mean and std, which run on the device (no PIL, a quarter of the bytes to copy) once
        the first frame showed that to equal the processor's output bit for bit; otherwise the processor runs. With
        the fast step only (the eager step keeps the processor's path)."""
        if self.fast and self.normalization is None:
            self.normalization = self.device_normalization(images[:1])
        if not self.fast or self.normalization is False:
            return self.processed_pixel_values(images)
        return normalize_on_device(images, *self.normalization, self.dtype)

    def processed_pixel_values(self, images: np.ndarray) -> torch.Tensor:
        pil_images = [Image.fromarray(image) for image in images]
        return self.processor.image_processor(pil_images, return_tensors="pt")["pixel_values"].to(
            self.device, self.dtype
        )

    def device_normalization(self, image: np.ndarray):
        """(mean, std) of the processor's towers as (1, 3 x towers, 1, 1) tensors on the device, if normalizing with
        them reproduces the processor on this frame exactly; else False."""
        processor = self.processor.image_processor
        means, stds = getattr(processor, "means", None), getattr(processor, "stds", None)
        if means is None or stds is None:
            return False
        mean = torch.tensor(means, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(stds, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        same = torch.equal(normalize_on_device(image, mean, std, self.dtype), self.processed_pixel_values(image))
        return (mean, std) if same else False

    @torch.no_grad()
    def act(self, images: np.ndarray, instructions, temperature: float = 1.0, generators: Optional[list] = None):
        """Sample (or with temperature 0, greedily decode) an action for each of B images in one batched call.

        `instructions`: one per image, or one `str` for all. `generators`: None, or one torch.Generator (or None:
        torch's global RNG) per image; images that share one draw from it in order, so a group's samples do not
        depend on which other groups share the batch. Returns token ids (B, 7), their log-probs summed over the
        7 tokens (B,), and env actions (B, 7).
        """
        was_training = self.model.training
        self.model.eval()  # the Prismatic forward returns no KV cache in training mode
        inputs, lengths = self.prepare(images, instructions)
        step = self.action_step()
        logits = step.start(inputs, lengths)
        tokens, log_probs = [], torch.zeros(len(lengths), device=self.device)
        for k in range(ACTION_DIM):
            logp = action_log_softmax(logits, temperature)
            choice = sample_tokens(logp.exp(), generators) if temperature > 0 else logp.argmax(-1)
            log_probs += logp.gather(-1, choice[:, None])[:, 0]
            tokens.append(choice + ACTION_TOKEN_BEGIN)
            if k + 1 < ACTION_DIM:
                logits = step.advance(tokens[-1], k)
        self.model.train(was_training)
        tokens = torch.stack(tokens, dim=1).cpu().numpy()
        return tokens, log_probs.float().cpu().numpy(), self.tokens_to_env_actions(tokens)

    def action_step(self):
        """The eager step, or the fast one (built again when `self.model` was replaced, e.g. wrapped with LoRA)."""
        if not self.fast:
            return EagerActionStep(self.model)
        if self.fast_step is None or self.fast_step.model is not self.model:
            self.fast_step = None  # its graphs and cache go before the new ones are made
            self.fast_step = FastActionStep(self.model, ACTION_DIM - 1, ACTION_ROWS)
        return self.fast_step

    def log_prob(self, images: np.ndarray, instruction: str, tokens, temperature: float = 1.0) -> torch.Tensor:
        """Teacher-forced log pi(tokens | image, instruction) for B images of one task, summed over the 7
        tokens; differentiable. One instruction (a str): its B prompts are equally long, so the action tokens follow
        every prompt at the same positions (with several, the shorter rows' tokens would follow their padding)."""
        if not isinstance(instruction, str):
            raise TypeError(
                f"log_prob scores B images of one instruction (a str), not a {type(instruction).__name__}: "
                "call it once per instruction"
            )
        tokens = np.asarray(tokens)  # checked here, not on the device: no sync per call
        if tokens.min() < ACTION_TOKEN_BEGIN or tokens.max() >= VOCAB_SIZE:
            raise ValueError(f"action tokens must lie in [{ACTION_TOKEN_BEGIN}, {VOCAB_SIZE}); got {tokens.tolist()}")
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        inputs, _ = self.prepare(images, instruction)
        input_ids = torch.cat([inputs["input_ids"], tokens], dim=1)
        attention_mask = torch.nn.functional.pad(inputs["attention_mask"], (0, ACTION_DIM), value=1)
        # OpenVLA's forward, stopped before the output layer: its logits of every position (~300 x 32k floats a
        # sample, cast to fp32, and as many gradients) would be thrown away but for the 7 that predict the tokens.
        vla = base_vla(self.model)
        embeds = multimodal_embeddings(vla, input_ids, inputs["pixel_values"])
        num_patches = embeds.shape[1] - input_ids.shape[1]
        mask = multimodal_mask(attention_mask, num_patches)
        hidden = vla.language_model.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)[0]
        logits = vla.language_model.lm_head(hidden[:, -ACTION_DIM - 1 : -1])  # whole: LoRA may adapt it
        logp = action_log_softmax(logits[..., ACTION_ROWS], temperature)
        return logp.gather(-1, (tokens - ACTION_TOKEN_BEGIN)[..., None])[..., 0].sum(-1)

    def tokens_to_env_actions(self, tokens: np.ndarray) -> np.ndarray:
        return gripper_to_libero(unnormalize_actions(action_tokens_to_actions(tokens), self.action_stats))


def normalize_on_device(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 (B, H, W, 3) frames -> (B, 3 x towers, H, W) pixel values, scaled and normalized where mean and std are."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).to(mean.device).permute(0, 3, 1, 2).float().div_(255.0)
    return ((pixels.repeat(1, mean.shape[1] // 3, 1, 1) - mean) / std).to(dtype)


def sample_tokens(probs: torch.Tensor, generators: Optional[list]) -> torch.Tensor:
    """One draw per row; rows that share a generator draw from it together, in row order."""
    if generators is None:
        return torch.multinomial(probs, 1)[:, 0]
    choice = torch.empty(len(probs), dtype=torch.long, device=probs.device)
    for generator in {id(g): g for g in generators}.values():
        rows = [i for i, g in enumerate(generators) if g is generator]
        choice[rows] = torch.multinomial(probs[rows], 1, generator=generator)[:, 0]
    return choice


def action_log_softmax(action_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probs over the 256 action tokens (the logits' ACTION_ROWS) only; greedy decoding scores at temperature 1."""
    return torch.log_softmax(action_logits.float() / (temperature if temperature > 0 else 1.0), dim=-1)


class EagerActionStep:
    """The policy step through the model's own forward and transformers' dynamic KV cache: `start(inputs, lengths)`
    -> the first token's action logits (B, 256), then `advance(tokens, k)` -> those of token k + 1. The reference
    that the fast step (fast_step.py) must match; used on the CPU and with --no-cuda-graphs."""

    def __init__(self, model):
        self.model = model

    def start(self, inputs: dict, lengths: torch.Tensor) -> torch.Tensor:
        out = self.model(**inputs, use_cache=True)
        batch, context_len = out.logits.shape[:2]
        num_patches = context_len - inputs["input_ids"].shape[1]  # inserted after BOS
        self.attention_mask = multimodal_mask(inputs["attention_mask"], num_patches)
        self.position = num_patches + lengths  # where each row's next token goes (right padding leaves a gap)
        self.past_key_values = out.past_key_values
        return out.logits[torch.arange(batch, device=lengths.device), self.position - 1, ACTION_ROWS]

    def advance(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        self.attention_mask = torch.nn.functional.pad(self.attention_mask, (0, 1), value=1)
        out = self.model.language_model(
            input_ids=tokens[:, None],
            attention_mask=self.attention_mask,
            position_ids=(self.position + k)[:, None],
            past_key_values=self.past_key_values,
            use_cache=True,
        )
        self.past_key_values = out.past_key_values
        return out.logits[:, -1, ACTION_ROWS]


def default_checkpoint(suite: str) -> str:
    if suite == "libero_90":
        raise UsageError("OpenVLA published no libero_90 checkpoint: pass --model <dir|hub id> or --model tiny")
    # A perturbation suite is run by its base suite's checkpoint.
    return f"openvla/openvla-7b-finetuned-{base_suite(suite).replace('_', '-')}"


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
        print(f"[openvla_policy] warning ({ALLOW_UNTESTED_VERSIONS}=1): {problem.split('. Run')[0]}", flush=True)


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
        f"[openvla_policy] warning: {num_parameters / 1e9:.2f}B parameters in {str(dtype).split('.')[-1]} on the CPU "
        f"take about {size / 1e9:.0f} GB of memory, and every policy step is slow (a CUDA GPU is far faster)"
    )


def check_padding_side(processor, model: str) -> None:
    """Prompts of different lengths share one batch (several groups' tasks), and `prepare` indexes each row from its
    start: the tokenizer must pad on the right. A checkpoint saved with left padding is refused before it loads."""
    side = getattr(processor.tokenizer, "padding_side", None)
    if side != "right":
        raise UsageError(
            f"--model {model}: its tokenizer pads on the {side} (padding_side in tokenizer_config.json), and the "
            'policy batches prompts padded on the right: set "padding_side": "right" there'
        )


def load_vla(
    model: Optional[str],
    suite: str,
    device: Optional[str] = None,
    dtype: DtypeChoice = "auto",
    fast: Optional[bool] = None,
) -> VLAPolicy:
    """Load an OpenVLA checkpoint (dir or hub id) or the tiny VLA through the same code path, on any device.

    dtype "auto" is bf16 on CUDA (as OpenVLA runs) and fp32 on the CPU (where bf16 matmuls are slow). fast: the
    static-shape policy step (fast_step.py), replayed as CUDA graphs on CUDA; None: on CUDA only (the CPU has no
    graphs, and there the eager step stays the reference the tests compare it with).
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
    fast = device.type == "cuda" if fast is None else fast
    if device.type == "cuda" and torch_dtype == torch.bfloat16 and not is_tiny and not fast:  # fast: SDPA layers
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
        with warnings.catch_warnings():
            # transformers 4.40.1 imports remote code with the deprecated load_module(); LIBERO turns
            # DeprecationWarnings on for every module, so each process would print it once.
            warnings.filterwarnings("ignore", r"the load_module\(\) method is deprecated", DeprecationWarning)
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
            check_padding_side(processor, model or path)
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
    action_stats = select_action_stats(vla.config.norm_stats, base_suite(suite))
    return VLAPolicy(vla, processor, action_stats, device, fast)
