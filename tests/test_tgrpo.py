"""TGRPO: the advantage against hand-computed values, the update, checkpoints and resume, end to end."""

import math

import numpy as np
import pytest
import torch
from peft import PeftModel
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import evaluate
import libero_envs
import openvla_policy
import recordings
import rewards
import rollout
import tgrpo

R2 = math.sqrt(2)


def advantages(rewards, alpha_step=1.0, alpha_traj=0.0, mask=None):
    rewards = torch.tensor(rewards, dtype=torch.float64)
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else torch.tensor(mask)
    return tgrpo.compute_advantages(rewards, mask, alpha_step, alpha_traj)[0].numpy()


# Worked by hand. Steps: t0 and t3 are (0, 3, 3): mean 2, biased std sqrt(2); t1 is a tie; t2 is (2, 2, 5):
# mean 3, std sqrt(2). Returns (3, 9, 12): mean 8, std sqrt(14).
REWARDS_3x4 = [[0, 1, 2, 0], [3, 1, 2, 3], [3, 1, 5, 3]]
STEP_3x4 = [[-R2, 0, -1 / R2, -R2], [1 / R2, 0, -1 / R2, 1 / R2], [1 / R2, 0, R2, 1 / R2]]
TRAJ_3x4 = [-5 / math.sqrt(14), 1 / math.sqrt(14), 4 / math.sqrt(14)]


def test_step_level_advantage_3x4_by_hand():
    np.testing.assert_allclose(advantages(REWARDS_3x4, 1.0, 0.0), STEP_3x4, atol=1e-6)


def test_trajectory_level_advantage_3x4_by_hand():
    np.testing.assert_allclose(
        advantages(REWARDS_3x4, 0.0, 1.0), np.repeat(np.array(TRAJ_3x4)[:, None], 4, 1), atol=1e-6
    )


def test_fused_weights_and_the_parts_training_logs():
    rewards = torch.tensor(REWARDS_3x4, dtype=torch.float64)
    fused, step, traj = tgrpo.compute_advantages(rewards, torch.ones(3, 4, dtype=torch.bool), 0.3, 0.7)
    np.testing.assert_allclose(fused, 0.3 * np.array(STEP_3x4) + 0.7 * np.array(TRAJ_3x4)[:, None], atol=1e-6)
    assert fused[2, 2] == pytest.approx(0.3 * R2 + 0.7 * 4 / math.sqrt(14), abs=1e-6)
    np.testing.assert_allclose(step, STEP_3x4, atol=1e-6)
    np.testing.assert_allclose(traj, TRAJ_3x4, atol=1e-6)


def test_ppo_clip_branch_by_hand():
    # Ratios e^0.5 = 1.6487 (clipped to 1.2) and e^-0.5 = 0.6065 (clipped to 0.8), each with A = +2 and -2.
    logp = torch.tensor([0.5, 0.5, -0.5, -0.5])
    advantages_ = torch.tensor([2.0, -2.0, 2.0, -2.0])
    loss, ratio = tgrpo.policy_loss(logp, torch.zeros(4), advantages_, clip_coef=0.2)
    e = math.exp(0.5)
    # -min(r A, clip(r) A): A > 0 takes the clipped 1.2 * 2; A < 0 takes the unclipped -e * 2 (the pessimistic
    # side); for r = 1/e: A > 0 keeps r * 2, A < 0 takes clip = 0.8 * -2.
    expected = [-1.2 * 2, e * 2, -2 / e, 0.8 * 2]
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(ratio, [e, e, 1 / e, 1 / e], rtol=1e-6)
    # With the old log-probs equal to the new ones the ratio is 1 and the loss is -A * 1.
    np.testing.assert_allclose(tgrpo.policy_loss(logp, logp, advantages_, 0.2)[0], -advantages_)


def test_k3_kl_estimator_by_hand():
    # k3 = exp(base - logp) - (base - logp) - 1: 0 where they agree, e^1 - 2 and e^-1 for the log-ratios +1, -1.
    kl = tgrpo.kl_to_base(torch.tensor([0.0, -1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0]))
    np.testing.assert_allclose(kl, [0.0, math.e - 2, math.exp(-1)], rtol=1e-6)


def test_ties_give_exact_zeros_never_nan():
    assert (advantages([[0.1, 7.0], [0.1, 7.0], [0.1, 7.0]], 0.3, 0.7) == 0).all()
    single = advantages([[1.0, 2.0]], 0.3, 0.7)
    assert (single == 0).all() and not np.isnan(single).any()


def test_two_trajectories_are_plus_and_minus_one():
    np.testing.assert_allclose(advantages([[1, 0], [3, 0]], 1.0, 0.0), [[-1, 0], [1, 0]], atol=1e-6)
    np.testing.assert_allclose(advantages([[1, 0], [3, 0]], 0.0, 1.0), [[-1, -1], [1, 1]], atol=1e-6)


def test_mask_with_different_lengths_by_hand():
    # Lengths 3, 2, 1; the 100s are padding and must not count.
    rewards = [[1, 2, 4], [3, 4, 100], [5, 100, 100]]
    mask = [[True, True, True], [True, True, False], [True, False, False]]
    s = math.sqrt(1.5)  # t0: (1, 3, 5), mean 3, std sqrt(8/3): z = -sqrt(3/2), 0, sqrt(3/2)
    np.testing.assert_allclose(advantages(rewards, 1.0, 0.0, mask), [[-s, -1, 0], [0, 1, 0], [s, 0, 0]], atol=1e-6)
    # Returns (7, 7, 5): mean 19/3, std sqrt(8)/3: z = 1/sqrt(2), 1/sqrt(2), -sqrt(2) on existing steps only.
    np.testing.assert_allclose(
        advantages(rewards, 0.0, 1.0, mask), [[1 / R2, 1 / R2, 1 / R2], [1 / R2, 1 / R2, 0], [-R2, 0, 0]], atol=1e-6
    )


# Reward shaping. The reward file's values (of the state after each step); trajectory 0 succeeds at its last step,
# 1 runs to the cap without success, 2 succeeds at step 1 and stops (--termination independent): the 99s are padding.
VALUES = [[1.0, 2.0, 5.0, 9.0], [1.0, 1.0, 2.0, 3.0], [2.0, 7.0, 99.0, 99.0]]
SHAPING_MASK = [[True] * 4, [True] * 4, [True, True, False, False]]
SUCCESS = [True, False, True]


def shaped(shaping):
    args = (torch.tensor(VALUES), torch.tensor(SHAPING_MASK), torch.tensor(SUCCESS))
    return tgrpo.shape_rewards(*args, shaping).numpy()


def test_dense_shaping_is_the_reward_files_values():
    assert np.array_equal(shaped("dense"), np.array(VALUES, np.float32))


def test_sparse_shaping_is_success_at_the_last_step_alone():
    np.testing.assert_array_equal(shaped("sparse"), [[0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]])


def test_potential_shaping_by_hand_and_returns_rank_as_sparse():
    # R[t] = success[t] + Phi(s[t+1]) - Phi(s[t]), Phi(s[0]) = 0 and Phi = 0 past the last step:
    # trajectory 0: 1 - 0, 2 - 1, 5 - 2, then 1 + 0 - 5; trajectory 1: 1, 0, 1, then 0 - 2; trajectory 2: 2, 1 + 0 - 2.
    np.testing.assert_array_equal(shaped("potential"), [[1, 1, 3, -4], [1, 0, 1, -2], [2, -1, 0, 0]])
    returns = shaped("potential").sum(1)
    np.testing.assert_array_equal(returns, shaped("sparse").sum(1))  # each return is its success
    mask = torch.tensor(SHAPING_MASK)
    _, _, traj_potential = tgrpo.compute_advantages(torch.tensor(shaped("potential")), mask, 0.3, 0.7)
    _, _, traj_sparse = tgrpo.compute_advantages(torch.tensor(shaped("sparse")), mask, 0.3, 0.7)
    assert torch.equal(traj_potential, traj_sparse)


# ----------------------------------------------------------------------------------------------------------


@pytest.fixture()
def lora_policy(tiny_cache):
    torch.manual_seed(0)
    policy = openvla_policy.load_vla("tiny", "libero_goal", device="cpu")
    policy.model = tgrpo.add_lora(policy.model, rank=8, alpha=16)
    return policy


def fixed_group(n=2, t=3, seed=0):
    rng = np.random.default_rng(seed)
    return rollout.Group(
        suite="libero_goal",
        task_name="put_the_bowl_on_the_plate",
        instruction="put the bowl on the plate",
        init_state_id=0,
        images=rng.integers(0, 256, (n, t, 224, 224, 3), dtype=np.uint8),
        tokens=rng.integers(openvla_policy.ACTION_TOKEN_BEGIN, openvla_policy.VOCAB_SIZE, (n, t, 7)),
        log_probs=np.zeros((n, t), np.float32),
        rewards=np.zeros((n, t), np.float32),
        mask=np.ones((n, t), bool),
        success=np.zeros(n, bool),
        lengths=np.full(n, t),
        failed=np.zeros(n, bool),
    )


def group_log_probs(policy, group):
    with torch.no_grad():
        return torch.stack([policy.log_prob(group.images[i], group.instruction, group.tokens[i]) for i in range(2)])


def test_one_update_moves_log_probs_with_the_sign_of_the_advantage(lora_policy):
    group = fixed_group()
    group.log_probs = group_log_probs(lora_policy, group).numpy()
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    optimizer = torch.optim.AdamW(tgrpo.master_weights(lora_policy.model), lr=1e-3)
    base = {n: p.detach().clone() for n, p in lora_policy.model.named_parameters() if not p.requires_grad}
    args = tgrpo.Args(micro_batch_size=4)  # 6 samples: two micro-batches, gradients accumulated
    stats = tgrpo.update_policy(
        lora_policy, [group], [advantages], [torch.ones(2, 3, dtype=torch.bool)], optimizer, args, 6
    )

    after = group_log_probs(lora_policy, group)
    assert (after[0] > torch.as_tensor(group.log_probs[0])).all(), "positive advantage: log-prob must rise"
    assert (after[1] < torch.as_tensor(group.log_probs[1])).all(), "negative advantage: log-prob must fall"
    assert (
        stats["grad_norm"] > 0 and stats["logprob_mismatch"] < 1e-4 and stats["approx_kl"] == pytest.approx(0, abs=1e-6)
    )
    # Only LoRA parameters are trainable, and the frozen base is bitwise unchanged.
    trainable = [n for n, p in lora_policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for name, p in lora_policy.model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, base[name]), name


class AdamWThatRecords(torch.optim.AdamW):
    """torch's AdamW that records `record()` after each step: the test's view of the policy between epochs."""

    def __init__(self, params, lr, record):
        super().__init__(params, lr=lr)
        self.record, self.seen = record, []

    def step(self, closure=None):
        result = super().step(closure)
        self.seen.append(self.record())
        return result


def test_kl_penalty_and_ppo_epochs_by_hand(lora_policy):
    group = fixed_group()
    group.log_probs = group_log_probs(lora_policy, group).numpy()
    params = tgrpo.master_weights(lora_policy.model)
    optimizer = AdamWThatRecords(params, lr=1e-2, record=lambda: group_log_probs(lora_policy, group))
    args = tgrpo.Args(update_epochs=3, kl_coef=0.1, clip_coef=0.2, micro_batch_size=8)
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    stats = tgrpo.update_policy(
        lora_policy, [group], [advantages], [torch.ones(2, 3, dtype=torch.bool)], optimizer, args, 6
    )
    # The stats are the last epoch's: the policy after two optimizer steps, against the first epoch's log-probs
    # (the sampled ones) and the base (the adapter disabled), each step's term divided by the 6 valid steps.
    logp = optimizer.seen[1]
    with torch.no_grad(), lora_policy.model.disable_adapter():
        base = group_log_probs(lora_policy, group)
    ratios = torch.exp(logp - torch.as_tensor(group.log_probs)).tolist()
    # -min(r A, clip(r) A), by hand: with A = +1 the smaller of r and its clip; with A = -1 the larger, negated twice.
    terms = [-min(r, min(max(r, 0.8), 1.2)) for r in ratios[0]] + [max(r, min(max(r, 0.8), 1.2)) for r in ratios[1]]
    clipped = sum(abs(r - 1) > 0.2 for row in ratios for r in row)
    assert clipped > 0, ratios  # lr 1e-2 moves the policy far: the clip is in play (here every ratio is past 1.2)
    kl = float((torch.exp(base - logp) - (base - logp) - 1).sum()) / 6
    assert stats["policy_loss"] == pytest.approx(sum(terms) / 6, rel=1e-5)
    assert stats["kl_to_base"] == pytest.approx(kl, rel=1e-5)
    assert stats["loss"] == pytest.approx(sum(terms) / 6 + 0.1 * kl, rel=1e-5)
    assert stats["approx_kl"] == pytest.approx(sum(r - 1 - math.log(r) for row in ratios for r in row) / 6, rel=1e-5)
    assert stats["clipfrac"] == pytest.approx(clipped / 6) and len(optimizer.seen) == 3


def test_a_missing_reward_file_names_the_command_that_makes_it():
    with pytest.raises(rewards.RewardFileError, match="python gen_reward.py --suite libero_goal --task-ids 3"):
        rollout.read_reward_file("libero_goal", libero_envs.get_task("libero_goal", 3).name, "/nonexistent/reward.py")


def test_schedule_cycles_tasks_then_init_states():
    assert [tgrpo.schedule(k, [2, 5]) for k in range(5)] == [(2, 0, 0), (5, 0, 0), (2, 1, 1), (5, 1, 1), (2, 2, 2)]
    assert tgrpo.schedule(101, [2, 5]) == (5, 0, 50)  # the 51st visit: init state 0 again, a new placement


# ----------------------------------------------------------------------------------------------------------
# End to end on real LIBERO with the tiny VLA

RAISE_EEF = """# Test reward: how far the end effector rose since the start.
def compute_reward(state, info):
    return float(state["eef_pos"][2] - info["initial"]["eef_pos"][2])
"""


def train(tmp_path, reward_file, exp_name, num_iterations, **overrides):
    args = tgrpo.Args(
        exp_name=exp_name,
        seed=3,
        suite="libero_goal",
        task_ids=(8,),
        model="tiny",
        reward_file=str(reward_file),
        device="cpu",
        num_iterations=num_iterations,
        num_envs=2,
        max_steps=3,
        camera_size=128,
        learning_rate=1e-3,
        micro_batch_size=4,
        save_every=1,
        video_every=2,
        output_dir=str(tmp_path),
        **overrides,
    )
    return tgrpo.main(args)


def adapter_weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoint" / "adapter" / "adapter_model.safetensors"))


def test_train_checkpoint_resume_and_reload(tmp_path, tiny_cache, capsys):
    reward_file = tmp_path / "raise_eef.py"
    reward_file.write_text(RAISE_EEF)
    stopped = train(
        tmp_path, reward_file, "stopped", 2, eval_every=2, eval_trials_per_task=1, eval_max_steps=2, save_groups=True
    )["run_dir"]
    # --save-groups: every group, with what the reward file saw (rescore.py reads them; tests/test_rescore.py).
    saved = sorted((stopped / "groups").iterdir())
    assert [p.name for p in saved] == ["iter00001_group00000.npz", "iter00002_group00001.npz"]
    assert [len(states) for states in recordings.load_group(saved[1]).reward_states] == [3, 3]

    events = EventAccumulator(str(stopped)).Reload()
    # Every scalar against global_step, the env steps so far: 2 envs x 3 steps an iteration (none succeeds in 3).
    assert [e.step for e in events.Scalars("charts/success_rate")] == [6, 12]
    assert [(e.step, e.value) for e in events.Scalars("charts/iteration")] == [(6, 1.0), (12, 2.0)]
    assert [e.step for e in events.Scalars("eval/success_rate")] == [12]
    # The reward check: no trajectory succeeded, so the top-return quarter's success rate is 0 (no correlation yet).
    check = events.Scalars("reward_check/put_the_bowl_on_the_plate/top_return_success")
    assert [(e.step, e.value) for e in check] == [(6, 0.0), (12, 0.0)]
    tags = ("charts/return_mean", "losses/loss", "losses/grad_norm", "losses/approx_kl", "advantages/traj_std")
    for tag in (*tags, "charts/SPS", "time/simulation", "time/update", "charts/learning_rate"):
        assert tag in events.Tags()["scalars"], tag
    assert (stopped / "videos").is_dir() and list((stopped / "videos").glob("iter00002_*.mp4"))
    checkpoint = stopped / "checkpoint"
    assert {p.name for p in checkpoint.iterdir()} == {"adapter", "optimizer.pt", "rng.pt", "trainer_state.json"}

    # Resuming with only the run dir and a longer --num-iterations restores every other argument and continues
    # at iteration 3 (that it ends bit for bit where an uninterrupted run ends: tests/test_reliability.py).
    # A reward file edit is flagged.
    before = adapter_weights(stopped)
    reward_file.write_text(RAISE_EEF + "# edited\n")
    capsys.readouterr()
    resumed = tgrpo.main(tgrpo.Args(num_iterations=3, resume=str(stopped)))
    out = capsys.readouterr().out
    assert "resuming" in out and "at iteration 3" in out and f"{reward_file} changed since the checkpoint" in out
    assert resumed["iteration"] == 3
    assert [e.step for e in EventAccumulator(str(stopped)).Reload().Scalars("charts/success_rate")] == [6, 12, 18]
    after = adapter_weights(stopped)
    assert after.keys() == before.keys() and any(not torch.equal(after[name], before[name]) for name in after)

    # The adapter loads with plain PEFT and moves the policy's actions away from the base model's.
    base = openvla_policy.load_vla("tiny", "libero_goal", device="cpu")
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    tokens = base.act(images, "put the bowl on the plate", temperature=0.0)[0]
    base_logp = base.log_prob(images, "put the bowl on the plate", tokens).detach()
    base.model = PeftModel.from_pretrained(base.model, str(checkpoint / "adapter"))
    tuned_logp = base.log_prob(images, "put the bowl on the plate", tokens).detach()
    assert not torch.allclose(base_logp, tuned_logp)
    # ... and through evaluate.py, from the run directory, to the same policy.
    evaluated = evaluate.load_policy("tiny", "libero_goal", str(stopped), device="cpu")
    np.testing.assert_allclose(
        evaluated.log_prob(images, "put the bowl on the plate", tokens).detach(), tuned_logp, atol=1e-6
    )


def test_resume_refuses_changes_that_would_make_another_run(tmp_path, tiny_cache):
    reward_file = tmp_path / "raise_eef.py"
    reward_file.write_text(RAISE_EEF)
    run_dir = train(tmp_path, reward_file, "one", 1)["run_dir"]
    with pytest.raises(libero_envs.UsageError, match="trained with --suite libero_goal, not libero_spatial"):
        tgrpo.main(tgrpo.Args(suite="libero_spatial", resume=str(run_dir)))
    with pytest.raises(libero_envs.UsageError, match="trained with --learning-rate 0.001, not 0.5"):
        tgrpo.main(tgrpo.Args(learning_rate=0.5, resume=str(run_dir)))
    with pytest.raises(libero_envs.UsageError, match="no complete checkpoint there"):
        tgrpo.main(tgrpo.Args(resume=str(tmp_path / "nope")))
