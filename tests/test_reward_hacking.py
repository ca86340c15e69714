"""The reward-hacking check (rewards/hacking.py): the numbers by hand, and the warnings where they must and must not
appear. tgrpo.py feeds it every iteration (tests/test_tgrpo.py checks the logged scalar)."""

import numpy as np
import pytest

from rewards import hacking


def test_average_ranks_share_ties():
    np.testing.assert_array_equal(hacking.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [2.5, 0, 2.5, 1])


def test_the_checks_by_hand():
    # Returns 1..8; successes at returns 4, 7 and 8.
    returns = np.arange(1.0, 9.0)
    success = np.array([0, 0, 0, 1, 0, 0, 1, 1], bool)
    check = hacking.reward_check([(returns[:4], success[:4]), (returns[4:], success[4:])])
    # Pearson of ranks 0..7 with success: mean rank 3.5; covariance sum (3 + 6 + 7) - 3 * 3.5 = 5.5;
    # rank sum of squares 42, success sum of squares 3 - 9/8 = 1.875: 5.5 / sqrt(42 * 1.875) = 0.6211...
    assert check["return_success_corr"] == pytest.approx(5.5 / np.sqrt(42 * 1.875))
    assert check["top_return_success"] == 1.0  # the quarter with the highest returns: 7 and 8, both succeeded
    assert check["failed_ahead"] == pytest.approx((1 + 2 + 3 + 5 + 6) / 5 - (4 + 7 + 8) / 3)
    assert check["return_trend"] == pytest.approx(6.5 - 2.5) and check["success_trend"] == pytest.approx(0.5 - 0.25)


def track(history, visits, task="put_the_bowl_on_the_plate"):
    """Feed `visits` [(returns, success)] one iteration at a time; the warnings of each."""
    signs = []
    for returns, success in visits:
        tasks = np.array([task] * len(returns))
        signs.append(hacking.track_reward_files(history, tasks, np.array(returns, float), np.array(success, bool))[1])
    return signs


HONEST = [([0.2, 0.4, 3.0, 0.1], [0, 0, 1, 0])] * 8  # the success scores highest, every time


def test_an_honest_reward_raises_no_warning():
    assert track({}, HONEST) == [[]] * 8


def test_failed_trajectories_out_scoring_successful_ones_warn_once_until_it_goes_away():
    hacked = ([5.0, 4.0, 1.0, 4.5], [0, 0, 1, 0])  # the failures score higher: the reward pays for something else
    signs = track({}, [hacked, hacked, *HONEST[:6], hacked])
    assert signs[0] == [
        (
            "put_the_bowl_on_the_plate",
            "over its last 1 visits, failed trajectories out-score " "successful ones by 3.5 return",
        )
    ]
    assert signs[1] == []  # still there: said once
    # It persists through visit 4 and is gone from visit 5 (failures 29.1 / 15 = 1.94 against successes 11 / 5 = 2.2).
    assert all(s == [] for s in signs[2:8])
    assert signs[8] == []  # one hacked visit among seven honest ones does not tip the window's means


def test_returns_rising_while_success_falls_warn_when_the_window_is_full():
    visits = [([1.0 + k, 1.0 + k], [k < 4, k < 4]) for k in range(8)]  # success 1 then 0; returns climb throughout
    signs = track({}, visits)
    # Successes first score lower than the failures that follow: failed_ahead fires as soon as failures appear.
    assert [kind for s in signs for _, kind in s if "rises" in kind] == [
        "over its last 8 visits, the return rises (+4) while success falls (-1.00)"
    ]
    assert "rises" in "".join(text for _, text in signs[7])  # on the 8th visit, the window being full


def test_a_task_visited_often_keeps_only_its_recent_window():
    history = {}
    track(history, HONEST * 2)
    assert len(history["put_the_bowl_on_the_plate"]["visits"]) == hacking.WINDOW
