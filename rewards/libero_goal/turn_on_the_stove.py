# Reward for libero_goal / turn_on_the_stove: "turn on the stove".
# Made by: hand-written by the maintainers to the gen_reward.py contract (no LLM, hence no model and no
#   prompt hash); key poses: targets derived from object positions (no demonstrations).
# Date: 2026-11-22
# Validation: gen_reward.py --check on 24 real states (init states 0-3, each after the wait steps and after
#   1-5 random actions): rewards in [0.06712, 0.08483], 24 distinct values, deterministic. A goal state built
#   in the simulator (objects placed, joints set, all goal predicates true) scores 25.58; init
#   states 0-2 score at most 0.08.
"""Multi-stage dense reward: reach the stove's knob, then turn it on.

Goal (BDDL): (Turnon flat_stove_1). LIBERO's turnon() holds when the knob joint, flat_stove_1's only joint, is at
0.5 rad or more (0 is off). The knob is not in the state; it sits on the stove's body origin, which is.
"""

import math

import numpy as np

STOVE = "flat_stove_1"
ON_QPOS = 0.5  # turnon() holds when the knob joint is at 0.5 rad or more (0 is off)
KNOB_HEIGHT = 0.03  # the knob sits on the stove's body origin; its top is about 3 cm above it
# Knob stage rewards, rising: none, near the knob, at the knob, turning, more than half way.
KNOB_STAGE_REWARDS = (0.0, 0.5, 1.5, 3.5, 5.5)
COMPLETION_REWARD = 20.0  # all goal predicates hold: far above every stage reward


def distance(a, b):
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def turn_knob(state):
    """Stage reached in turning the stove on (an index into KNOB_STAGE_REWARDS) and its key pose, the knob."""
    stove = state["objects"][STOVE]
    knob = np.asarray(stove["pos"], dtype=np.float64) + np.array([0.0, 0.0, KNOB_HEIGHT])
    reach = distance(state["eef_pos"], knob)
    turned = min(max(float(stove["joint_qpos"][0]) / ON_QPOS, 0.0), 1.0)
    stage = 0
    if reach < 0.10:
        stage = 1  # the gripper is near the knob
    if reach < 0.04:
        stage = 2  # the gripper is at the knob
    if turned > 0.2:
        stage = 3  # the knob is turning
    if turned > 0.6:
        stage = 4  # more than half way to on
    return stage, knob


def compute_reward(state, info):
    stage, key = turn_knob(state)
    reward = KNOB_STAGE_REWARDS[stage]
    if all(goal["satisfied"] for goal in state["goal"]) or state["success"]:
        reward += COMPLETION_REWARD
    # Small end-effector shaping toward the key pose of the current stage (at most 0.5, one stage step).
    reward += 0.5 * math.exp(-5.0 * distance(state["eef_pos"], key))
    return float(reward)
