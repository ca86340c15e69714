"""The fast policy step (openvla_policy/fast_step.py) against the eager one, on the tiny VLA.

On the CPU the fast step runs the same static-shape functions that a GPU captures as CUDA graphs, so these tests
check what the graphs replay: the padding of prompts and batches, the masks, the positions and the KV cache.
benchmarks/bench_gpu.py checks the graphs themselves on a GPU.
"""

import numpy as np
import pytest
import torch

import openvla_policy
import rollout
from openvla_policy import fast_step
import tgrpo

INSTRUCTIONS = [
    "open the top drawer and put the bowl inside",
    "push the plate to the front of the stove",
    "turn on the stove",
]


@pytest.fixture(scope="module")
def fast_policy(tiny_cache):
    return openvla_policy.load_vla("tiny", "libero_goal", device="cpu", fast=True)


def images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)


def assert_same_actions(eager, fast, frames, instructions, temperature):
    generators = lambda: [torch.Generator().manual_seed(i) for i in range(len(frames))]  # noqa: E731
    tokens, log_probs, actions = eager.act(frames, instructions, temperature, generators())
    fast_tokens, fast_log_probs, fast_actions = fast.act(frames, instructions, temperature, generators())
    np.testing.assert_array_equal(fast_tokens, tokens)
    np.testing.assert_allclose(fast_log_probs, log_probs, atol=1e-4)
    np.testing.assert_array_equal(fast_actions, actions)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_fast_step_decodes_as_the_eager_step(tiny_policy, fast_policy, temperature):
    """Prompts of three lengths in one batch of 3 (padded to 4 rows): the same greedy tokens, and with the same
    generators the same samples, with the same log-probs. The CPU default is the eager step."""
    assert not tiny_policy.fast and fast_policy.fast
    assert_same_actions(tiny_policy, fast_policy, images(3, seed=0), INSTRUCTIONS, temperature)
    assert type(fast_policy.fast_step).__name__ == "FastActionStep"


def test_the_fast_step_serves_any_batch_size_in_any_order(tiny_policy, fast_policy):
    """Batches that fill a bucket, overflow it (9 in 16 rows: the KV cache grows) and come back to a smaller one."""
    for batch, seed in ((1, 1), (9, 2), (2, 3), (4, 4)):
        frames = images(batch, seed)
        instructions = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(batch)]
        assert_same_actions(tiny_policy, fast_policy, frames, instructions, temperature=0.0)
    # The cache grew for 9 rows (16), and the later, smaller batches were served from it.
    assert {batch for batch, _ in fast_policy.fast_step.shapes} == {2, 4, 16}


def test_the_fast_step_follows_a_lora_adapter_and_its_updates(tiny_policy, fast_policy):
    """Wrapped with the same LoRA adapter, both steps sample alike; after an optimizer step too (the graphs read
    the weights in place). The update's first ratio is 1 within 1e-3: the log-probs the fast step sampled with
    equal those the update differentiates (`logprob_mismatch`, per sample)."""
    eager_model, fast_model = tiny_policy.model, fast_policy.model
    trainable = {param: param.requires_grad for model in (eager_model, fast_model) for param in model.parameters()}
    wrapped = []
    try:
        for policy in (tiny_policy, fast_policy):
            torch.manual_seed(0)
            policy.model = tgrpo.add_lora(policy.model, rank=4, alpha=None)
            wrapped.append(policy.model)
            for name, param in policy.model.named_parameters():
                if "lora_B" in name:
                    param.data.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
        frames = images(4, seed=5)
        assert_same_actions(tiny_policy, fast_policy, frames, INSTRUCTIONS[0], temperature=1.0)
        assert fast_policy.fast_step.model is fast_policy.model  # built again for the wrapped model

        tokens, log_probs, _ = fast_policy.act(frames, INSTRUCTIONS[0], 1.0)
        group = rollout.Group(
            suite="libero_goal",
            task_name="synthetic",
            instruction=INSTRUCTIONS[0],
            init_state_id=0,
            images=frames[:, None],
            tokens=tokens[:, None],
            log_probs=log_probs[:, None],
            rewards=np.zeros((4, 1), np.float32),
            mask=np.ones((4, 1), bool),
            success=np.zeros(4, bool),
            lengths=np.ones(4, np.int64),
            failed=np.zeros(4, bool),
        )
        args = tgrpo.Args(micro_batch_size=2, learning_rate=0.05)
        optimizer = torch.optim.AdamW(tgrpo.master_weights(fast_policy.model), lr=args.learning_rate)
        advantages = torch.tensor([[1.0], [-1.0], [0.5], [-0.5]])
        stats = tgrpo.update_policy(
            fast_policy, [group], [advantages], [torch.ones(4, 1, dtype=torch.bool)], optimizer, args, num_steps=4
        )
        assert stats["logprob_mismatch"] < 1e-3
        assert stats["grad_norm"] > 0

        # The step moved the adapter's weights; the fast step sees them, as the eager step of the same model does.
        tiny_policy.model = fast_policy.model
        assert_same_actions(tiny_policy, fast_policy, frames, INSTRUCTIONS[0], temperature=0.0)
    finally:  # the session's tiny policy goes back as it was: the LoRA layers out, the base weights untouched
        for model in wrapped:
            model.unload()
        for param, requires_grad in trainable.items():  # PEFT froze the base weights
            param.requires_grad_(requires_grad)
        tiny_policy.model, fast_policy.model = eager_model, fast_model


class Replay:
    """A faithful stand-in for CapturedShapes: `static`'s functions, each step's logits written into one fixed output
    tensor, as a CUDA graph's replay does."""

    def __init__(self, static):
        self.static, self.outputs = static, {}

    def output(self, name: str, logits: torch.Tensor) -> torch.Tensor:
        return self.outputs.setdefault(name, torch.empty_like(logits)).copy_(logits)

    def prefill(self):
        return self.output("prefill", self.static.prefill())

    def decode(self):
        return self.output("decode", self.static.decode())


class OverwrittenOutput(Replay):
    """A faulty replay: every decode step returns the prefill's output, as when a graph's output is read after the
    next replay overwrote it."""

    def decode(self):
        self.static.decode()
        return self.outputs["prefill"]


class FrozenDecodeStep(Replay):
    """A faulty replay: every token decodes as the first, as when a graph froze a host-side step number at capture."""

    def decode(self):
        step = self.static.decode_step.clone()
        self.static.decode_step.zero_()
        logits = super().decode()
        self.static.decode_step.copy_(step)
        return logits


def test_a_graph_replay_that_departs_from_its_step_is_caught(fast_policy):
    """On CUDA each captured shape's first replay, on real inputs, is compared with its functions run without graphs
    (replay_difference), and beyond REPLAY_TOLERANCE the step drops its graphs. The comparison, on the CPU: 0 for the
    functions against themselves and against a replay into fixed outputs, beyond the tolerance for two faults of
    captured graphs. The buffers stay ready."""
    fast_policy.act(images(3, seed=9), INSTRUCTIONS, temperature=0.0)
    step = fast_policy.fast_step
    static = step.static
    with torch.no_grad():
        first = static.prefill()
    difference = lambda replayed: fast_step.replay_difference(  # noqa: E731
        static, replayed, step.num_decode_steps, openvla_policy.ACTION_TOKEN_BEGIN
    )
    assert difference(static) == 0.0 and difference(Replay(static)) == 0.0
    assert difference(OverwrittenOutput(static)) > 10 * fast_step.REPLAY_TOLERANCE
    assert difference(FrozenDecodeStep(static)) > 2 * fast_step.REPLAY_TOLERANCE
    with torch.no_grad():
        assert static.decode_step.item() == 0 and torch.equal(static.prefill(), first)


def test_frames_are_normalized_on_the_device_only_where_that_equals_the_processor(fast_policy):
    """224 px frames (what the env workers deliver) need only scaling and each tower's mean and std: checked once
    against the processor, bit for bit. Frames of another size, which the processor resizes, keep its path."""
    frames = images(3, seed=6)
    assert torch.equal(fast_policy.pixel_values(frames), fast_policy.processed_pixel_values(frames))
    assert fast_policy.normalization is not False
    other = openvla_policy.VLAPolicy(
        fast_policy.model, fast_policy.processor, fast_policy.action_stats, fast_policy.device, fast=True
    )
    small = np.random.default_rng(7).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    assert torch.equal(other.pixel_values(small), other.processed_pixel_values(small))
    assert other.normalization is False


def test_the_fast_step_in_bfloat16_as_a_gpu_runs_it(tiny_cache):
    """bf16 weights, as on CUDA: the fast step's kernels round differently, so near-tied logits may flip a greedy
    token; where all 7 agree the log-probs agree to bf16 rounding (0.004 on the machine this was written on), and
    the sampled log-probs stay within bf16 rounding of the ones the update differentiates (0.005 there)."""
    eager = openvla_policy.load_vla("tiny", "libero_goal", device="cpu", dtype="bfloat16")
    fast = openvla_policy.load_vla("tiny", "libero_goal", device="cpu", dtype="bfloat16", fast=True)
    frames = images(5, seed=8)
    instructions = INSTRUCTIONS + INSTRUCTIONS[:2]
    tokens, log_probs, _ = eager.act(frames, instructions, temperature=0.0)
    fast_tokens, fast_log_probs, _ = fast.act(frames, instructions, temperature=0.0)
    same = (tokens == fast_tokens).all(axis=1)
    assert np.mean(tokens == fast_tokens) > 0.8 and same.sum() >= 3
    assert np.abs(log_probs - fast_log_probs)[same].max() < 0.05
    assert fast.fast_step.cache_keys[0].dtype == torch.bfloat16 and fast.normalization is not False

    sampled_tokens, sampled_log_probs, _ = fast.act(frames[:4], INSTRUCTIONS[2], temperature=1.0)
    with torch.no_grad():
        scored = fast.log_prob(frames[:4], INSTRUCTIONS[2], sampled_tokens).float().numpy()
    assert np.abs(sampled_log_probs - scored).max() < 0.05
