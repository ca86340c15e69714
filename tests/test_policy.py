"""Action tokens against OpenVLA's published mapping, and the batched VLA policy on the tiny model."""

import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import libero_envs
import openvla_policy

from conftest import ROOT

INSTRUCTION = "put the bowl on the plate"


def test_encoding_matches_the_published_mapping():
    # token = 32000 - digitize(clip(a), linspace(-1, 1, 256)), so -1 -> bin 1 and +1 -> bin 256.
    actions = np.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])
    bins = np.linspace(-1, 1, 256)
    assert bins[127] < 0 < bins[128]
    expected = [31999, 31999, 32000 - 128, 32000 - np.digitize(0.5, bins), 31744, 31744]
    np.testing.assert_array_equal(openvla_policy.actions_to_action_tokens(actions), expected)


def test_decoding_matches_the_published_mapping():
    # index = 32000 - token - 1, clipped to [0, 254], then the bin center.
    half_bin = 1.0 / 255.0
    decoded = openvla_policy.action_tokens_to_actions(np.array([31999, 31872, 31745, 31744]))
    np.testing.assert_allclose(decoded, [-1 + half_bin, 0.0, 1 - half_bin, 1 - half_bin], atol=1e-12)
    actions = np.random.default_rng(0).uniform(-1, 1, size=1000)
    roundtrip = openvla_policy.action_tokens_to_actions(openvla_policy.actions_to_action_tokens(actions))
    assert np.abs(roundtrip - actions).max() <= 2 * half_bin + 1e-12


def test_unnormalize_maps_the_unit_range_to_q01_q99_except_masked_dims():
    stats = {"q01": [-0.5, 0.0, -2.0], "q99": [0.5, 1.0, 2.0], "mask": [True, True, False]}
    out = openvla_policy.unnormalize_actions(np.array([[-1.0, 0.0, 0.3], [1.0, 1.0, -0.7]]), stats)
    np.testing.assert_allclose(out, [[-0.5, 0.5, 0.3], [0.5, 1.0, -0.7]])


def test_gripper_mapping_open_is_minus_one_close_is_plus_one():
    actions = np.zeros((3, 7))
    actions[:, -1] = [0.99, 0.02, 0.7]  # OpenVLA: 1 = open
    np.testing.assert_array_equal(openvla_policy.gripper_to_libero(actions)[:, -1], [-1.0, 1.0, -1.0])
    assert actions[0, -1] == 0.99, "the input must not be modified"


def test_norm_stats_accept_either_key_spelling_and_explain_a_miss():
    stats = {"q01": [0.0] * 7, "q99": [1.0] * 7}
    assert openvla_policy.select_action_stats({"libero_goal_no_noops": {"action": stats}}, "libero_goal") is stats
    assert openvla_policy.select_action_stats({"libero_goal": {"action": stats}, "x": {}}, "libero_goal") is stats
    with pytest.raises(ValueError, match="no action statistics for suite 'libero_10'.*libero_goal"):
        openvla_policy.select_action_stats({"libero_goal": {"action": stats}, "bridge": {}}, "libero_10")


def test_a_checkpoint_that_is_not_there_names_the_choices(tmp_path):
    # Any checkpoint may load on any device (tests/test_loading.py); one that does not exist gets the choices.
    with pytest.raises(
        libero_envs.UsageError, match="neither a checkpoint directory with a config.json nor a hub id.*--model tiny"
    ):
        openvla_policy.load_vla(str(tmp_path / "missing"), "libero_goal", device="cpu")


def observations(batch, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(batch, 224, 224, 3), dtype=np.uint8)


def test_tiny_loads_through_the_checkpoint_path(tiny_policy, tiny_cache):
    # `tiny` is built into the cache and loaded like any checkpoint directory: by trust_remote_code.
    (directory,) = list(tiny_cache.glob("tiny-vla-*"))
    assert (directory / "config.json").exists()
    assert type(tiny_policy.model).__module__.startswith("transformers_modules")
    reloaded = openvla_policy.load_vla(str(directory), "libero_goal", device="cpu")
    assert reloaded.action_stats == tiny_policy.action_stats


def test_prompt_follows_openvla_and_ends_with_the_space_token(tiny_policy):
    assert openvla_policy.build_prompt("Put the BOWL on the plate") == (
        "In: What action should the robot take to put the bowl on the plate?\nOut:"
    )
    inputs, lengths = tiny_policy.prepare(observations(2), INSTRUCTION)
    assert inputs["input_ids"][0, 0] == 1 and (inputs["input_ids"][:, -1] == openvla_policy.SPACE_TOKEN).all()
    assert inputs["attention_mask"].shape == inputs["input_ids"].shape and inputs["attention_mask"].all()
    assert inputs["pixel_values"].shape == (2, 6, 224, 224)
    assert lengths.tolist() == [inputs["input_ids"].shape[1]] * 2


def test_prompts_of_different_lengths_are_padded_on_the_right(tiny_policy):
    inputs, lengths = tiny_policy.prepare(observations(2), ["open the drawer", INSTRUCTION])
    alone, _ = tiny_policy.prepare(observations(1), "open the drawer")
    short, long = lengths.tolist()
    assert short == alone["input_ids"].shape[1] < long == inputs["input_ids"].shape[1]
    # The short row is the unpadded prompt, space token included, then pads the mask hides.
    assert inputs["input_ids"][0, :short].tolist() == alone["input_ids"][0].tolist()
    assert inputs["attention_mask"][0].tolist() == [1] * short + [0] * (long - short)
    assert (inputs["input_ids"][:, lengths - 1].diagonal() == openvla_policy.SPACE_TOKEN).all()


def test_one_batch_of_several_instructions_decodes_as_each_alone(tiny_policy):
    # Several groups (tasks) share one policy call per step: padding must not change any row's action.
    images = observations(4, seed=3)
    instructions = ["open the drawer", INSTRUCTION, "turn on the stove and put the moka pot on it", INSTRUCTION]
    tokens, logp, _ = tiny_policy.act(images, instructions, temperature=0.0)
    for i, instruction in enumerate(instructions):
        alone_tokens, alone_logp, _ = tiny_policy.act(images[i : i + 1], instruction, temperature=0.0)
        np.testing.assert_array_equal(tokens[i], alone_tokens[0])
        np.testing.assert_allclose(logp[i], alone_logp[0], atol=1e-4)
        scored = tiny_policy.log_prob(images[i : i + 1], instruction, tokens[i : i + 1]).detach().numpy()
        np.testing.assert_allclose(scored, alone_logp, atol=1e-4)
    assert len({tuple(row) for row in tokens}) > 1


def test_a_groups_samples_do_not_depend_on_the_other_groups_in_the_batch(tiny_policy):
    images, instructions = observations(4, seed=4), ["open the drawer"] * 2 + [INSTRUCTION] * 2

    def generator(seed):
        return torch.Generator().manual_seed(seed)

    first, second = generator(10), generator(11)
    together, _, _ = tiny_policy.act(images, instructions, 1.0, generators=[first, first, second, second])
    alone, _, _ = tiny_policy.act(images[2:], instructions[2:], 1.0, generators=[generator(11)] * 2)
    np.testing.assert_array_equal(together[2:], alone)
    other, _, _ = tiny_policy.act(images[2:], instructions[2:], 1.0, generators=[generator(12)] * 2)
    assert (other != alone).any(), "another seed must draw other tokens"


def test_sampling_never_leaves_the_action_tokens(tiny_policy):
    torch.manual_seed(0)
    tokens, log_probs, actions = tiny_policy.act(observations(4), INSTRUCTION, temperature=5.0)
    assert tokens.shape == (4, 7) and log_probs.shape == (4,) and actions.shape == (4, 7)
    for _ in range(5):
        tokens, _, actions = tiny_policy.act(observations(4), INSTRUCTION, temperature=5.0)
        assert ((tokens >= openvla_policy.ACTION_TOKEN_BEGIN) & (tokens < openvla_policy.VOCAB_SIZE)).all()
    # Hot sampling spreads over many bins; the gripper is always exactly open or closed.
    assert len(np.unique(tokens)) > 10
    assert set(np.unique(actions[:, -1])) <= {-1.0, 1.0}
    np.testing.assert_allclose(actions, tiny_policy.tokens_to_env_actions(tokens))


@pytest.mark.parametrize("temperature", [1.0, 1.6, 0.0])
def test_teacher_forced_log_prob_equals_the_sampling_log_prob(tiny_policy, temperature):
    torch.manual_seed(1)
    images = observations(3, seed=1)
    tokens, log_probs, _ = tiny_policy.act(images, INSTRUCTION, temperature)
    scored = tiny_policy.log_prob(images, INSTRUCTION, tokens, temperature)
    assert scored.requires_grad
    np.testing.assert_allclose(scored.detach().numpy(), log_probs, atol=1e-4)
    assert (log_probs < 0).all()


def test_log_prob_equals_the_models_own_forward_with_a_lora_adapter(tiny_cache):
    # log_prob stops the model's forward before the output layer and applies it at the 7 action positions only;
    # the log-probs and the adapter's gradients must be those of the whole forward's logits.
    from peft import LoraConfig, get_peft_model

    policy = openvla_policy.load_vla("tiny", "libero_goal", device="cpu")
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights="gaussian")
    policy.model = get_peft_model(policy.model, config)
    adapter = [p for p in policy.model.parameters() if p.requires_grad]
    for param in adapter:  # B starts at zero: give the adapter an effect to differentiate
        param.data.normal_(0.0, 0.05)
    images = observations(4, seed=3)
    tokens = np.random.default_rng(3).integers(openvla_policy.ACTION_TOKEN_BEGIN, openvla_policy.VOCAB_SIZE, (4, 7))

    def gradients(logp):
        return torch.autograd.grad(logp.sum(), adapter)

    scored = policy.log_prob(images, INSTRUCTION, tokens, temperature=1.3)
    inputs, _ = policy.prepare(images, INSTRUCTION)
    ids = torch.as_tensor(tokens)
    logits = policy.model(
        input_ids=torch.cat([inputs["input_ids"], ids], dim=1),
        attention_mask=torch.nn.functional.pad(inputs["attention_mask"], (0, 7), value=1),
        pixel_values=inputs["pixel_values"],
    ).logits[:, -8:-1, openvla_policy.ACTION_ROWS]
    reference = openvla_policy.action_log_softmax(logits, 1.3)
    reference = reference.gather(-1, (ids - openvla_policy.ACTION_TOKEN_BEGIN)[..., None])[..., 0].sum(-1)
    np.testing.assert_allclose(scored.detach().numpy(), reference.detach().numpy(), rtol=0, atol=1e-5)
    mine = gradients(scored)
    assert all(torch.isfinite(g).all() for g in mine) and any(g.abs().max() > 0 for g in mine)
    for mine, theirs in zip(mine, gradients(reference)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_batched_greedy_decoding_equals_row_by_row(tiny_policy):
    images = observations(3, seed=2)
    batched_tokens, batched_logp, _ = tiny_policy.act(images, INSTRUCTION, temperature=0.0)
    for i in range(3):
        tokens, logp, _ = tiny_policy.act(images[i : i + 1], INSTRUCTION, temperature=0.0)
        np.testing.assert_array_equal(tokens[0], batched_tokens[i])
        np.testing.assert_allclose(logp[0], batched_logp[i], atol=1e-5)
    # Different images give different greedy actions: the vision input is not ignored.
    assert len({tuple(row) for row in batched_tokens}) > 1


def test_log_prob_rejects_non_action_tokens(tiny_policy):
    with pytest.raises(ValueError, match="action tokens must lie in"):
        tiny_policy.log_prob(observations(1), INSTRUCTION, np.full((1, 7), 29871))


# ----------------------------------------------------------------------------------------------------------
# The contract the scripts use (README, "Swapping the VLA"), shown on the tiny VLA


def test_log_prob_refuses_several_instructions(tiny_policy):
    # With prompts of different lengths the shorter rows' action tokens would follow their padding.
    tokens = tiny_policy.act(observations(2), INSTRUCTION, temperature=0.0)[0]
    with pytest.raises(TypeError, match="one instruction .a str., not a list: call it once per instruction"):
        tiny_policy.log_prob(observations(2), ["open the drawer", INSTRUCTION], tokens)


def test_a_tokenizer_that_pads_on_the_left_is_refused_at_load(tiny_policy, tiny_cache, tmp_path):
    (directory,) = list(tiny_cache.glob("tiny-vla-*"))
    left = tmp_path / "left-padded"
    shutil.copytree(directory, left)
    config = json.loads((left / "tokenizer_config.json").read_text())
    (left / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    with pytest.raises(libero_envs.UsageError) as error:
        openvla_policy.load_vla(str(left), "libero_goal", device="cpu")
    assert str(error.value) == (
        f"--model {left}: its tokenizer pads on the left (padding_side in tokenizer_config.json), and the policy "
        'batches prompts padded on the right: set "padding_side": "right" there'
    )


def test_what_the_scripts_use_of_the_policy(tiny_policy):
    # The image pipeline travels to the env workers by name, and gives the policy's input size from any render size.
    assert pickle.loads(pickle.dumps(openvla_policy.preprocess_image)) is openvla_policy.preprocess_image
    frame = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    image = openvla_policy.preprocess_image(frame)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    # act: tokens, their log-probs and decoded env actions (LIBERO's gripper: -1 open, +1 close) in one call ...
    images = np.stack([image, openvla_policy.preprocess_image(frame[::-1])])
    tokens, logp, actions = tiny_policy.act(images, [INSTRUCTION, "open the drawer"], temperature=1.0)
    assert tokens.shape == (2, openvla_policy.ACTION_DIM) and logp.shape == (2,) and actions.shape == (2, 7)
    assert set(np.abs(actions[:, -1])) == {1.0}
    # ... and log_prob scores the same distribution, one instruction at a time.
    for i, instruction in enumerate([INSTRUCTION, "open the drawer"]):
        scored = tiny_policy.log_prob(images[i : i + 1], instruction, tokens[i : i + 1]).detach().numpy()
        np.testing.assert_allclose(scored, logp[i : i + 1], atol=1e-4)


@pytest.mark.parametrize(
    "package, kept_out",
    [("openvla_policy", ("libero", "robosuite", "mujoco")), ("libero_envs", ("openvla_image", "openvla_policy"))],
)
def test_the_policy_and_the_simulator_do_not_load_each_other(package, kept_out):
    code = f"import sys, {package}; print(sorted(m for m in sys.modules if m.split('.')[0] in {kept_out!r}))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
