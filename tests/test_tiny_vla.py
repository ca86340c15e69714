"""The tiny VLA loads through OpenVLA's calls and keeps OpenVLA's vocabulary, processor and forward contract."""

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForVision2Seq, AutoProcessor

from tiny_vla import build_tiny_vla

PROMPT = "In: What action should the robot take to {}?\nOut:"
INSTRUCTIONS = [
    "put the black bowl on the plate",
    "open the top drawer of the cabinet",
    "pick up the alphabet soup and place it in the basket",
]
NUM_PATCHES = (224 // 56) ** 2  # tiny_vla default patch size


def load(path):
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    model = AutoModelForVision2Seq.from_pretrained(
        path, torch_dtype=torch.float32, trust_remote_code=True, low_cpu_mem_usage=True
    )
    return processor, model.eval()


def images(n, size=256, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def vla_dir(tmp_path_factory):
    return build_tiny_vla(str(tmp_path_factory.mktemp("tiny") / "vla"), seed=0)


@pytest.fixture(scope="module")
def vla(vla_dir):
    return load(vla_dir)


def test_vocabulary_layout(vla):
    processor, model = vla
    tok = processor.tokenizer
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    assert tok.convert_ids_to_tokens([3, 258]) == ["<0x00>", "<0xFF>"]
    assert tok.convert_ids_to_tokens(29871) == "▁"
    assert tok.pad_token == "<PAD>" and tok.pad_token_id == 32000
    assert len(tok) == 32001
    assert model.get_input_embeddings().weight.shape[0] == 32064
    assert model.get_output_embeddings().weight.shape[0] == 32064
    for text in [PROMPT.format(i) for i in INSTRUCTIONS] + ["Ünïcode — 机器人 {}[]~"]:
        ids = tok(text).input_ids
        assert ids[0] == 1 and ids[1] != 1 and ids[-1] != 2
        assert not any(31744 <= i <= 31999 for i in ids)
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_processor_shapes_and_batch_mismatch(vla):
    processor, _ = vla
    batch = processor([PROMPT.format(INSTRUCTIONS[0])] * 3, images(3, size=200))
    length = len(processor.tokenizer(PROMPT.format(INSTRUCTIONS[0])).input_ids)
    assert batch["input_ids"].shape == (3, length) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].shape == (3, length)
    assert batch["pixel_values"].shape == (3, 6, 224, 224) and batch["pixel_values"].dtype == torch.float32
    # Channels 0-2 are ImageNet-normalized, 3-5 are (x - 0.5) / 0.5 of the same pixels.
    x01 = batch["pixel_values"][:, 3:] * 0.5 + 0.5
    dino_mean, dino_std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(batch["pixel_values"][:, :3], (x01 - dino_mean[:, None, None]) / dino_std[:, None, None])

    single = processor(PROMPT.format(INSTRUCTIONS[0]), images(1)[0])
    assert single["input_ids"].shape == (1, length) and single["pixel_values"].shape == (1, 6, 224, 224)

    with pytest.raises(ValueError):
        processor([PROMPT.format(INSTRUCTIONS[0])] * 2, images(3))


def test_logits_are_num_patches_longer(vla):
    processor, model = vla
    batch = processor([PROMPT.format(INSTRUCTIONS[1])] * 2, images(2))
    with torch.no_grad():
        logits = model(**batch).logits
        text_only = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (2, batch["input_ids"].shape[1] + NUM_PATCHES, 32064)
    assert text_only.shape == (2, batch["input_ids"].shape[1], 32064)
    assert not torch.allclose(logits[0, -1], logits[1, -1])  # the image reaches the output


def test_batched_cached_decoding_matches_full_forward(vla):
    processor, model = vla
    batch = processor([PROMPT.format(INSTRUCTIONS[2])] * 3, images(3, seed=1))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        out = model(**batch, use_cache=True)
        for _ in range(3):
            next_ids = out.logits[:, -1].argmax(-1)
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            past_len = out.past_key_values[0][0].shape[2]
            assert past_len == ids.shape[1] - 1 + NUM_PATCHES
            out = model.language_model(
                input_ids=next_ids[:, None],
                attention_mask=torch.ones(3, past_len + 1, dtype=mask.dtype),
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            full = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"]).logits
            torch.testing.assert_close(out.logits[:, -1], full[:, -1], atol=1e-4, rtol=0)


def test_generate_at_batch_size_one_matches_greedy_decoding(vla):
    processor, model = vla
    batch = processor(PROMPT.format(INSTRUCTIONS[0]), images(1, seed=2)[0])
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=7, do_sample=False)[:, batch["input_ids"].shape[1] :]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        for _ in range(7):
            logits = model(input_ids=ids, attention_mask=mask, pixel_values=batch["pixel_values"]).logits
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert torch.equal(generated, ids[:, -7:])


def test_action_rows_vary_with_the_action_and_the_policy_starts_near_uniform(vla):
    processor, model = vla
    rows = model.get_output_embeddings().weight[31744:32000].detach()
    # The rows' main direction orders them by the action their bin means (id 31744: +1, 31999: -1), as in a
    # VLA trained on demonstrations; independent random rows would correlate about 0 with it.
    centered = rows - rows.mean(0)
    main_direction = torch.linalg.svd(centered, full_matrices=False).Vh[0]
    along = centered @ main_direction
    assert abs(np.corrcoef(along.numpy(), np.linspace(1, -1, 256))[0, 1]) > 0.99
    with torch.no_grad():
        batch = processor([PROMPT.format(INSTRUCTIONS[0])] * 3, images(3))
        action_logits = model(**batch).logits[:, -1, 31744:32000]
    entropy = -(action_logits.log_softmax(-1) * action_logits.softmax(-1)).sum(-1)
    assert (entropy > 5.3).all() and (entropy < np.log(256)).all(), entropy  # uniform: 5.545 nats


def test_build_is_deterministic_and_replaces(tmp_path):
    first = load_file(f"{build_tiny_vla(str(tmp_path / 'a'), seed=3)}/model.safetensors")
    second = load_file(f"{build_tiny_vla(str(tmp_path / 'b'), seed=3)}/model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)

    # Rebuilding into an existing directory replaces it; another seed gives other weights.
    other = load_file(f"{build_tiny_vla(str(tmp_path / 'a'), seed=4)}/model.safetensors")
    assert not torch.equal(first["projector.fc1.weight"], other["projector.fc1.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary leftovers


def test_peft_all_linear_lora_trains_only_adapters(vla_dir):
    processor, model = load(vla_dir)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=4, target_modules="all-linear", init_lora_weights="gaussian")
    )
    targets = model.peft_config["default"].target_modules
    assert {"q_proj", "v_proj", "down_proj", "qkv", "fc1"} <= targets
    # peft 0.11.1 drops the output layer by its full name but matches targets by base name, so a nested
    # lm_head (`language_model.lm_head`, as in OpenVLA) gets an adapter; its base weight stays frozen.
    assert "lm_head" in targets

    model.gradient_checkpointing_enable()
    model.train()
    batch = processor([PROMPT.format(INSTRUCTIONS[0])] * 2, images(2))
    logits = model(**batch).logits
    logits[:, -8:-1, 31744:32000].log_softmax(-1).max(-1).values.sum().backward()

    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable and all("lora_" in n for n in trainable)
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
