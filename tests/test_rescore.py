"""Recorded groups (what the reward file saw) and rescore.py: a recording rescored with the file that made it gives
its rewards back bit for bit; another file is run confined, as in training, and compared by hand."""

import numpy as np
import pytest

import libero_envs
import openvla_policy
import recordings
import rescore
import rollout
from cli import UsageError

from conftest import ROOT

RAISE_EEF = ROOT / "tests" / "data" / "raise_eef.py"
LOWER_EEF = """def compute_reward(state, info):
    return float(info["initial"]["eef_pos"][2] - state["eef_pos"][2])
"""


@pytest.fixture(scope="module")
def recording(tiny_policy, tmp_path_factory):
    """A group of 2 trajectories x 4 steps on libero_goal task 8, scored with raise_eef.py and saved."""
    pool = libero_envs.EnvPool(2, openvla_policy.preprocess_image)
    try:
        group = rollout.collect_group(
            tiny_policy,
            pool,
            suite="libero_goal",
            task_id=8,
            init_state_id=0,
            reward_file=rollout.read_reward_file("libero_goal", "put_the_bowl_on_the_plate", str(RAISE_EEF)),
            max_steps=4,
            camera_size=128,
        )
    finally:
        pool.close()
    path = tmp_path_factory.mktemp("recording") / "groups" / "group.npz"
    group.save(path)
    return path, group


def test_a_saved_group_loads_back_with_what_the_reward_file_saw(recording):
    path, group = recording
    loaded = recordings.load_group(path)
    for name in ("images", "tokens", "log_probs", "rewards", "mask", "success", "lengths", "failed"):
        assert np.array_equal(getattr(loaded, name), getattr(group, name)), name
    assert loaded.reward_file == str(RAISE_EEF) and loaded.reward_sha256 == group.reward_sha256
    assert [len(states) for states in loaded.reward_states] == [4, 4]
    state, original = loaded.reward_states[1][2], group.reward_states[1][2]
    assert state["step"] == 3 and state["eef_pos"].dtype == np.float64
    assert np.array_equal(state["eef_pos"], original["eef_pos"])
    assert loaded.reward_infos[0]["initial"]["eef_pos"].tolist() == group.reward_infos[0]["initial"]["eef_pos"].tolist()
    assert (
        loaded.reward_infos[0]["max_steps"] == 4 and loaded.reward_infos[0]["task_name"] == "put_the_bowl_on_the_plate"
    )


def test_rescoring_with_the_file_that_made_it_gives_its_rewards_bit_for_bit(recording, capsys):
    path, group = recording
    results = rescore.main(rescore.Args(recordings=(str(path.parent),)))
    (result,) = results.values()
    assert np.array_equal(result["rescored"][0], group.rewards) and result["max_reward_change"] == 0.0
    assert result["advantage_corr"] == pytest.approx(1.0) and result["advantage_sign_flips"] == 0.0
    assert "| put_the_bowl_on_the_plate |" in capsys.readouterr().out


def test_another_file_is_compared_by_hand(recording, tmp_path):
    path, group = recording
    lower = tmp_path / "lower_eef.py"
    lower.write_text(LOWER_EEF)
    (result,) = rescore.main(rescore.Args(recordings=(str(path),), reward_file=str(lower))).values()
    # b - a is exactly -(a - b) in floating point: the new rewards are the recorded ones negated, so every advantage
    # flips its sign (none is 0: the arm moves differently in each trajectory) and the returns swap order.
    assert np.array_equal(result["rescored"][0], -group.rewards)
    assert result["max_reward_change"] == pytest.approx(2 * np.abs(group.rewards).max())
    assert result["advantage_corr"] == pytest.approx(-1.0) and result["advantage_sign_flips"] == 1.0
    assert result["trajectories"] == 2 and result["succeeded"] == 0


def test_bad_recordings_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="no recorded group"):
        rescore.main(rescore.Args(recordings=(str(tmp_path),)))
    with pytest.raises(UsageError, match="no such file or folder"):
        rescore.main(rescore.Args(recordings=(str(tmp_path / "missing.npz"),)))
