"""The bf16 path on the CPU with the tiny VLA: sampling, teacher-forced scoring, one update of bf16 LoRA weights
stepped through fp32 master copies, and a checkpoint's reload. OpenVLA runs in bf16 on a GPU; these run the same
code in bf16 here."""

import shutil

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

import evaluate
import libero_envs
import openvla_policy
import rollout
import tgrpo

INSTRUCTION = "put the bowl on the plate"
# The tiny VLA's random action logits are nearly flat (std ~0.14), so bf16 would round almost nothing; scaled up
# to a std of ~4 they are as peaked as a trained policy's and bf16's 8-bit mantissa shows.
LOGIT_SHARPENING = 25.0
# Sampling (prefill, then one cached token at a time) and scoring (one teacher-forced pass) multiply matrices of
# other shapes, which a CPU's bf16 kernels may round differently. Measured, the largest of 4 samples: 1e-6 under
# avx512 and default kernels, 0.028 under avx2 (no bf16 instructions). bf16 against fp32 moves the same log-probs
# by up to 0.2, so the bound allows bf16 rounding on any kernel; a decoding mistake such as feeding a cached token
# at the next position moved them by 0.2 here (fp32 tests/test_policy.py catches it at 1e-4).
LOGPROB_MISMATCH_BOUND = 0.1


def observations(batch, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(batch, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sharp_dir(tiny_cache, tmp_path_factory):
    """A copy of the tiny VLA checkpoint with its action logits scaled up; loads like any checkpoint directory."""
    directory = tmp_path_factory.mktemp("sharp") / "tiny-vla-sharp"
    shutil.copytree(openvla_policy.resolve_checkpoint("tiny", "libero_goal")[0], directory)
    weights = load_file(directory / "model.safetensors")
    (head,) = [name for name in weights if name.endswith("lm_head.weight")]
    weights[head][openvla_policy.ACTION_TOKEN_BEGIN : openvla_policy.VOCAB_SIZE] *= LOGIT_SHARPENING
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    return str(directory)


@pytest.fixture(scope="module")
def bf16_policy(sharp_dir):
    return openvla_policy.load_vla(sharp_dir, "libero_goal", device="cpu", dtype="bfloat16")


def test_dtype_flag_sets_the_weights_and_auto_is_fp32_on_cpu(bf16_policy, tiny_policy):
    assert {p.dtype for p in bf16_policy.model.parameters()} == {torch.bfloat16}
    assert bf16_policy.dtype == torch.bfloat16  # pixel values follow the weights
    assert {p.dtype for p in tiny_policy.model.parameters()} == {torch.float32}  # --dtype auto on the CPU
    with pytest.raises(libero_envs.UsageError, match="--dtype 'float16': use auto, bfloat16, float32"):
        openvla_policy.load_vla("tiny", "libero_goal", device="cpu", dtype="float16")


def test_bf16_sampling_and_teacher_forced_log_probs_agree(bf16_policy, sharp_dir):
    images = observations(4)
    torch.manual_seed(0)
    tokens, sampled, actions = bf16_policy.act(images, INSTRUCTION)
    assert tokens.shape == (4, 7) and np.all(
        (tokens >= openvla_policy.ACTION_TOKEN_BEGIN) & (tokens < openvla_policy.VOCAB_SIZE)
    )
    assert actions.shape == (4, 7) and np.all(np.isfinite(actions))
    assert np.all(sampled < 0) and np.all(sampled > -7 * np.log(256) - 50)  # peaked, not flat: the sharpening took

    with torch.no_grad():
        scored = bf16_policy.log_prob(images, INSTRUCTION, tokens).float().numpy()
    mismatch = np.abs(scored - sampled).max()
    print(f"bf16 sampling vs teacher-forced log-prob mismatch: {mismatch:.2e}")
    assert mismatch < LOGPROB_MISMATCH_BOUND

    fp32_policy = openvla_policy.load_vla(sharp_dir, "libero_goal", device="cpu", dtype="float32")
    with torch.no_grad():
        fp32_scored = fp32_policy.log_prob(images, INSTRUCTION, tokens).numpy()
    assert np.abs(fp32_scored - scored).max() > 1e-2  # bf16 rounds visibly here: the sharpening took


def lora_weights(model) -> dict:
    return {name: param for name, param in model.named_parameters() if "lora_" in name}


def test_bf16_lora_stepped_through_fp32_masters_then_checkpoint_and_reload(sharp_dir, tmp_path):
    torch.manual_seed(0)
    policy = openvla_policy.load_vla(sharp_dir, "libero_goal", device="cpu", dtype="bfloat16")
    policy.model = tgrpo.add_lora(policy.model, rank=8, alpha=16)
    masters = tgrpo.master_weights(policy.model)
    optimizer = torch.optim.AdamW(masters, lr=1e-3)
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}  # the forward and backward run in bf16
    assert {m.dtype for m in masters} == {torch.float32} and len(masters) == len(lora_weights(policy.model))
    start = [m.clone() for m in masters]

    # A group of 2 trajectories x 2 steps sampled by the policy itself; the first gets a positive advantage.
    images = observations(4, seed=1)
    tokens, log_probs, _ = policy.act(images, INSTRUCTION)
    n, t = 2, 2
    group = rollout.Group(
        suite="libero_goal",
        task_name="put_the_bowl_on_the_plate",
        instruction=INSTRUCTION,
        init_state_id=0,
        images=images.reshape(n, t, 224, 224, 3),
        tokens=tokens.reshape(n, t, 7),
        log_probs=log_probs.reshape(n, t),
        rewards=np.zeros((n, t), np.float32),
        mask=np.ones((n, t), bool),
        success=np.zeros(n, bool),
        lengths=np.full(n, t),
        failed=np.zeros(n, bool),
    )
    advantages = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    mask = torch.ones(n, t, dtype=torch.bool)
    stats = tgrpo.update_policy(
        policy, [group], [advantages], [mask], optimizer, tgrpo.Args(micro_batch_size=8), num_steps=n * t
    )
    assert stats["logprob_mismatch"] < LOGPROB_MISMATCH_BOUND  # the update scored what the sampler drew
    with torch.no_grad():
        after = policy.log_prob(images, INSTRUCTION, tokens).float().numpy()
    assert np.all(after[:2] > log_probs[:2]), "positive advantage: the log-prob must rise"
    assert np.all(after[2:] < log_probs[2:]), "negative advantage: the log-prob must fall"
    # AdamW stepped the fp32 masters; the model's bf16 weights are their rounding, exactly.
    assert all(not torch.equal(m, m0) for m, m0 in zip(masters, start))
    assert all(torch.equal(p, m.to(torch.bfloat16)) for p, m in zip(lora_weights(policy.model).values(), masters))

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoint = tgrpo.save_checkpoint(run_dir, policy.model, optimizer, {"iteration": 1}, tgrpo.rng_state())
    saved = load_file(checkpoint / "adapter" / "adapter_model.safetensors")
    assert {v.dtype for v in saved.values()} == {torch.float32}  # the masters, not their rounding
    names = [name.replace(".default", "") for name in lora_weights(policy.model)]
    assert sorted(saved) == sorted(names) and all(torch.equal(saved[n], m) for n, m in zip(names, masters))

    def reloaded_log_probs(reloaded):
        with torch.no_grad():
            return reloaded.log_prob(images, INSTRUCTION, tokens).float().numpy()

    # Plain peft 0.11, evaluate.py and tgrpo.py --resume all round the saved fp32 weights to bf16: the policy that
    # training ended with, to the bit; --resume also steps on from the exact masters.
    plain = openvla_policy.load_vla(sharp_dir, "libero_goal", device="cpu", dtype="bfloat16")
    plain.model = PeftModel.from_pretrained(plain.model, str(checkpoint / "adapter"))
    resumed, resumed_optimizer, _ = tgrpo.load_trainable_policy(
        tgrpo.Args(model=sharp_dir, dtype="bfloat16"), checkpoint, "cpu"
    )
    evaluated = evaluate.load_policy(
        sharp_dir, "libero_goal", str(checkpoint / "adapter"), device="cpu", dtype="bfloat16"
    )
    for reloaded in (plain, resumed, evaluated):
        assert {p.dtype for p in lora_weights(reloaded.model).values()} == {torch.bfloat16}
        np.testing.assert_array_equal(reloaded_log_probs(reloaded), after)
    resumed_masters = resumed_optimizer.param_groups[0]["params"]
    assert all(torch.equal(r, m) for r, m in zip(resumed_masters, masters)) and len(resumed_masters) == len(masters)
