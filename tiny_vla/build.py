"""Build the tiny test VLA into a directory that loads like the real OpenVLA checkpoint.

    processor = AutoProcessor.from_pretrained(out_dir, trust_remote_code=True)
    model = AutoModelForVision2Seq.from_pretrained(out_dir, trust_remote_code=True, ...)
"""

import json
import os
import shutil
import tempfile

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
from transformers import LlamaTokenizerFast

from .configuration_tiny_vla import TinyVLAConfig
from .modeling_tiny_vla import TinyVLAForActionPrediction
from .processing_tiny_vla import TinyVLAImageProcessor, TinyVLAProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE_CODE = ["configuration_tiny_vla.py", "modeling_tiny_vla.py", "processing_tiny_vla.py"]
AUTO_MAP_MODEL = {
    "AutoConfig": "configuration_tiny_vla.TinyVLAConfig",
    "AutoModelForVision2Seq": "modeling_tiny_vla.TinyVLAForActionPrediction",
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


def _write(tmp: str, seed: int, image_size: int) -> None:
    norm_stats = libero_norm_stats()
    config = TinyVLAConfig(image_size=image_size, norm_stats=norm_stats)
    config.auto_map = AUTO_MAP_MODEL
    with torch.random.fork_rng(devices=[]):  # deterministic weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = TinyVLAForActionPrediction(config)
    model.save_pretrained(tmp, safe_serialization=True)

    processor = TinyVLAProcessor(TinyVLAImageProcessor(image_size=image_size), build_tokenizer())
    processor.save_pretrained(tmp)
    path = os.path.join(tmp, "preprocessor_config.json")
    with open(path) as f:
        preprocessor_config = json.load(f)
    preprocessor_config["auto_map"] = AUTO_MAP_PROCESSOR
    with open(path, "w") as f:
        json.dump(preprocessor_config, f, indent=2)

    with open(os.path.join(tmp, "dataset_statistics.json"), "w") as f:
        json.dump(norm_stats, f, indent=2)
    for name in REMOTE_CODE:
        shutil.copy(os.path.join(HERE, name), os.path.join(tmp, name))


def build_tiny_vla(out_dir: str, seed: int = 0, image_size: int = 224) -> str:
    """Write the tiny VLA (same weights for the same seed) into `out_dir`, replacing it; returns its path.

    Everything is written to a temporary sibling first and renamed into place, so a concurrent reader or
    builder never sees a half-written directory.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        _write(tmp, seed, image_size)
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
