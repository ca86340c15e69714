"""Build the tiny test VLA, or a random model of OpenVLA-7B's shapes, into a directory that loads like the real
OpenVLA checkpoint.

    python -m tiny_vla --out /tmp/tiny-vla                                # 5.5M parameters, the default
    python -m tiny_vla --preset openvla-7b --out /data/openvla-7b-shaped  # 7.54B, 15 GB of bf16

    processor = AutoProcessor.from_pretrained(out_dir, trust_remote_code=True)
    model = AutoModelForVision2Seq.from_pretrained(out_dir, trust_remote_code=True, ...)

The openvla-7b preset costs what OpenVLA-7B costs to run (time and memory depend on the shapes, not on the
weights), so GPU benchmarks need no download. It is built without the network and without ever holding the
7B weights in memory: the model is laid out on the meta device and its random bf16 weights are drawn and
written one shard at a time.
"""

import json
import os
import shutil
import tempfile

import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
from transformers import LlamaTokenizerFast

from .configuration_tiny_vla import OpenVLAShapedConfig, TinyVLAConfig
from .modeling_tiny_vla import ChannelScale, OpenVLAShapedForActionPrediction, TinyVLAForActionPrediction
from .processing_tiny_vla import TinyVLAImageProcessor, TinyVLAProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE_CODE = ["configuration_tiny_vla.py", "modeling_tiny_vla.py", "processing_tiny_vla.py"]
AUTO_MAP_MODEL = {
    "AutoConfig": "configuration_tiny_vla.TinyVLAConfig",
    "AutoModelForVision2Seq": "modeling_tiny_vla.TinyVLAForActionPrediction",
}
AUTO_MAP_OPENVLA_SHAPED = {
    "AutoConfig": "configuration_tiny_vla.OpenVLAShapedConfig",
    "AutoModelForVision2Seq": "modeling_tiny_vla.OpenVLAShapedForActionPrediction",
}
AUTO_MAP_PROCESSOR = {
    "AutoImageProcessor": "processing_tiny_vla.TinyVLAImageProcessor",
    "AutoProcessor": "processing_tiny_vla.TinyVLAProcessor",
}
BASE_VOCAB, SPIECE_UNDERLINE_ID = 32000, 29871
# Whole-word pieces for the prompt template and LIBERO's instructions: prompts come out about as short as
# with Llama's real vocabulary (~25 tokens, not ~75 characters), which keeps the tiny model's prefill cheap.
WORDS = """In What Out action should the robot take to alphabet and at back basket bbq between black book both
bottle bottom bowl box butter cabinet caddy center cheese chocolate close compartment cookie cream drawer
dressing from front frying in inside it juice ketchup left microwave middle milk moka mug next of off on open
orange pan pick place plate pot pots pudding push put rack ramekin red right salad sauce shelf soup stack stove
table them tomato top tray turn under up white wine wooden yellow""".split()
LIBERO_KEYS = ["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"]

# OpenVLA-7B's shapes, read in openvla/openvla (prismatic/extern/hf): Llama-2-7B over Llama-2's vocabulary padded to
# 32064 rows, and the "dinosiglip-vit-so-224px" fused backbone, DINOv2 ViT-L/14 with registers + SigLIP So400m/14.
OPENVLA_7B = dict(
    text_config=dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
    ),
    timm_model_ids=["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    image_size=224,
    patch_size=14,
)
OPENVLA_7B_PARAMETERS = 7.54e9  # as published
ACTION_ROWS = slice(BASE_VOCAB - 256, BASE_VOCAB)  # the 256 action bins' ids, 31744..31999
ACTION_ROW_SLOPE = 0.5


def word_merges(words: list) -> list:
    """BPE merges that build each "▁word" left to right, e.g. (▁, p), (▁p, u), (▁pu, t); shared prefixes once."""
    merges, seen = [], set()
    for word in words:
        current = "▁"
        for char in word:
            if current + char not in seen:
                seen.add(current + char)
                merges.append((current, char))
            current += char
    return merges


def build_tokenizer() -> LlamaTokenizerFast:
    """A Llama-2-style tokenizer with the real id layout; text never maps to the action ids 31744..31999."""
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    chars = ["▁"] + [chr(c) for c in range(33, 127)]  # "▁" (= space) and printable ASCII
    # Fillers are multi-character pieces without merges, so BPE can never produce them.
    pieces += [f"<unused_{i}>" for i in range(len(pieces), SPIECE_UNDERLINE_ID)]
    pieces += chars
    merges = word_merges(WORDS)
    pieces += [left + right for left, right in merges]
    pieces += [f"<unused_{i}>" for i in range(len(pieces), BASE_VOCAB)]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    assert len(vocab) == BASE_VOCAB and vocab["▁"] == SPIECE_UNDERLINE_ID

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tokenizer = LlamaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
        padding_side="right",
        model_max_length=2048,
    )
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})  # id 32000, as in OpenVLA
    return tokenizer


def libero_norm_stats() -> dict:
    """Synthetic but plausible LIBERO action statistics (xyz, rotation, gripper), one entry per suite."""
    stats = {
        "q01": [-0.9375] * 3 + [-0.2] * 3 + [0.0],
        "q99": [0.9375] * 3 + [0.2] * 3 + [1.0],
        "mask": [True] * 6 + [False],
        "mean": [0.0] * 6 + [0.5],
        "std": [0.35] * 3 + [0.06] * 3 + [0.5],
        "min": [-0.9375] * 3 + [-0.375] * 3 + [0.0],
        "max": [0.9375] * 3 + [0.375] * 3 + [1.0],
    }
    return {f"{key}_no_noops": {"action": {k: list(v) for k, v in stats.items()}} for key in LIBERO_KEYS}


def write_processor_and_code(out_dir: str, image_size: int, norm_stats: dict) -> None:
    """Everything of a checkpoint but the model: processor, tokenizer, dataset statistics, remote code."""
    processor = TinyVLAProcessor(TinyVLAImageProcessor(image_size=image_size), build_tokenizer())
    processor.save_pretrained(out_dir)
    path = os.path.join(out_dir, "preprocessor_config.json")
    with open(path) as f:
        preprocessor_config = json.load(f)
    preprocessor_config["auto_map"] = AUTO_MAP_PROCESSOR
    with open(path, "w") as f:
        json.dump(preprocessor_config, f, indent=2)

    with open(os.path.join(out_dir, "dataset_statistics.json"), "w") as f:
        json.dump(norm_stats, f, indent=2)
    for name in REMOTE_CODE:
        shutil.copy(os.path.join(HERE, name), os.path.join(out_dir, name))


def add_action_direction(model: TinyVLAForActionPrediction) -> None:
    """Give the action bins' output rows a shared direction scaled by the bin's action value (+1 at id 31744, -1 at
    31999), as a VLA trained on demonstrations has: neighbouring bins mean nearly the same action, so their rows are
    alike. A policy can then move its mean action by moving its hidden state along one direction. With independent
    random rows it can only learn bin by bin, which RL on a few dozen samples per update did not do reliably
    (README, "Results"). The logits still start nearly uniform (entropy about 5.5 of 5.55 nats)."""
    direction = torch.randn(model.config.text_config.hidden_size)
    action_values = torch.linspace(1.0, -1.0, ACTION_ROWS.stop - ACTION_ROWS.start)
    with torch.no_grad():
        rows = model.language_model.lm_head.weight[ACTION_ROWS]
        rows += ACTION_ROW_SLOPE * action_values[:, None] * direction / direction.norm()


def _write_tiny(tmp: str, seed: int, image_size: int) -> None:
    norm_stats = libero_norm_stats()
    config = TinyVLAConfig(image_size=image_size, norm_stats=norm_stats)
    config.auto_map = AUTO_MAP_MODEL
    with torch.random.fork_rng(devices=[]):  # deterministic weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = TinyVLAForActionPrediction(config)
        add_action_direction(model)
    model.save_pretrained(tmp, safe_serialization=True)
    write_processor_and_code(tmp, image_size, norm_stats)


def initial_kinds(model: torch.nn.Module) -> dict:
    """How each parameter of a new model starts: norms 1, biases 0, layer scales 0.1, everything else N(0, 0.02)."""
    kinds = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            if param_name == "bias":
                kind = "zeros"
            elif "Norm" in type(module).__name__:  # nn.LayerNorm, LlamaRMSNorm
                kind = "ones"
            elif isinstance(module, ChannelScale):
                kind = "layer_scale"
            else:
                kind = "normal"
            kinds[f"{module_name}.{param_name}" if module_name else param_name] = kind
    return kinds


def random_tensor(shape, kind: str, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    device = generator.device
    if kind == "ones":
        return torch.ones(shape, dtype=dtype, device=device)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype, device=device)
    if kind == "layer_scale":
        return torch.full(shape, 0.1, dtype=dtype, device=device)
    return torch.empty(shape, device=device).normal_(0.0, 0.02, generator=generator).to(dtype)


def write_random_weights(
    model: torch.nn.Module,
    out_dir: str,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    max_shard_bytes: int = 2 * 2**30,
) -> int:
    """Write random weights for `model` (built on the meta device: names and shapes only) as the sharded
    safetensors files `from_pretrained` reads, drawing one shard at a time; returns the parameter count."""
    kinds = initial_kinds(model)
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    if set(shapes) != set(kinds):
        raise ValueError(f"buffers in the state dict have no initial value: {sorted(set(shapes) - set(kinds))[:5]}")
    shards, size = [[]], 0
    for name, shape in shapes.items():
        nbytes = shape.numel() * dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes

    generator = torch.Generator(device).manual_seed(seed)
    weight_map = {}
    for k, names in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: random_tensor(shapes[name], kinds[name], generator, dtype).cpu() for name in names}
        save_file(tensors, os.path.join(out_dir, file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
        del tensors
    num_parameters = sum(shape.numel() for shape in shapes.values())
    index = {"metadata": {"total_size": num_parameters * dtype.itemsize}, "weight_map": weight_map}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return num_parameters


def openvla_shaped_config() -> OpenVLAShapedConfig:
    config = OpenVLAShapedConfig(**OPENVLA_7B, norm_stats=libero_norm_stats())
    config.auto_map = AUTO_MAP_OPENVLA_SHAPED
    return config


def empty_model(config: TinyVLAConfig) -> torch.nn.Module:
    """The model with every parameter on the meta device: its layout without its memory."""
    is_shaped = isinstance(config, OpenVLAShapedConfig)
    with init_empty_weights():
        return (OpenVLAShapedForActionPrediction if is_shaped else TinyVLAForActionPrediction)(config)


def write_random_checkpoint(
    out_dir: str, config: TinyVLAConfig, seed: int = 0, device: str = "cpu", max_shard_bytes: int = 2 * 2**30
) -> int:
    """A complete checkpoint directory for `config` with random bf16 weights; returns the parameter count."""
    num_parameters = write_random_weights(empty_model(config), out_dir, seed, device, max_shard_bytes=max_shard_bytes)
    config.torch_dtype = torch.bfloat16
    config.save_pretrained(out_dir)
    write_processor_and_code(out_dir, config.image_size, config.norm_stats)
    return num_parameters


def _write_openvla_shaped(tmp: str, seed: int, device: str) -> None:
    num_parameters = write_random_checkpoint(tmp, openvla_shaped_config(), seed, device)
    published = f"OpenVLA-7B: {OPENVLA_7B_PARAMETERS / 1e9:.2f}B"
    print(f"[tiny_vla] openvla-7b preset: {num_parameters:,} parameters ({num_parameters / 1e9:.3f}B; {published})")


def build_into(out_dir: str, write) -> str:
    """Run `write(tmp)` on a temporary sibling of `out_dir`, then rename it into place; returns the path.

    A concurrent reader or builder never sees a half-written directory.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        write(tmp)
        while True:
            try:
                os.replace(tmp, out_dir)
                return out_dir
            except OSError:
                if not os.path.isdir(out_dir):
                    raise
            # A non-empty out_dir (an earlier or concurrent build) cannot be replaced in one rename:
            # move it aside, delete it, and try again.
            old = tmp + ".old"
            try:
                os.rename(out_dir, old)
            except FileNotFoundError:
                continue  # another builder moved it first
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_tiny_vla(out_dir: str, seed: int = 0, image_size: int = 224) -> str:
    """Write the tiny VLA (same weights for the same seed) into `out_dir`, replacing it; returns its path."""
    return build_into(out_dir, lambda tmp: _write_tiny(tmp, seed, image_size))


def build_openvla_shaped(out_dir: str, seed: int = 0, device: str = "cpu") -> str:
    """Write a model of OpenVLA-7B's shapes with random bf16 weights (about 15 GB) into `out_dir`, replacing it.

    The same seed and device give the same weights; `device="cuda"` draws them much faster.
    """
    return build_into(out_dir, lambda tmp: _write_openvla_shaped(tmp, seed, device))
