# Reward for libero_goal / open_the_middle_drawer_of_the_cabinet: "open the middle drawer of the cabinet".
# Made by: hand-written by the maintainers to the gen_reward.py contract (no LLM, hence no model and no
#   prompt hash); key poses: targets derived from object positions (no demonstrations).
# Date: 2026-11-22
# Validation: gen_reward.py --check on 24 real states (init states 0-3, each after the wait steps and after
#   1-5 random actions): rewards in [0.09678, 0.1106], 24 distinct values, deterministic. A goal state built
#   in the simulator (objects placed, joints set, all goal predicates true) scores 27.61; init
#   states 0-2 score at most 0.11.
"""Multi-stage dense reward: reach the middle drawer's handle, then pull the drawer open.

Goal (BDDL): (Open wooden_cabinet_1_middle_region). LIBERO's open() holds when the drawer's slide joint is below
-0.14 m (0 is closed); joint_qpos of wooden_cabinet_1 lists the top, middle and bottom drawers in that order. The
handle is not in the state: it sits 11.3 cm in front of the drawer region's centre along the pull direction, the
region's -y axis, and the region moves with the drawer.
"""

import math

import numpy as np

CABINET = "wooden_cabinet_1"
DRAWER = "wooden_cabinet_1_middle_region"
JOINT_INDEX = 1  # the middle drawer in wooden_cabinet_1's joint_qpos (top, middle, bottom)
OPEN_QPOS = -0.14  # open() threshold of the slide joint
HANDLE_OFFSET = 0.113  # handle distance in front of the drawer region's centre, along the pull direction
# Stage rewards, rising: none, near the handle, at the handle, drawer moving, half open, nearly open.
STAGE_REWARDS = (0.0, 0.5, 1.5, 3.5, 5.5, 7.5)
COMPLETION_REWARD = 20.0  # all goal predicates hold: far above every stage reward


def distance(a, b):
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def rotate(quat, vec):
    """`vec` rotated by the (x, y, z, w) quaternion `quat`."""
    u = np.asarray(quat[:3], dtype=np.float64)
    v = np.asarray(vec, dtype=np.float64)
    return v + 2.0 * np.cross(u, np.cross(u, v) + quat[3] * v)


def drawer_handle(state):
    """World position of the drawer's handle and the drawer's unit pull direction (the region's -y axis)."""
    region = state["objects"][DRAWER]
    pull = rotate(region["quat"], (0.0, -1.0, 0.0))
    return np.asarray(region["pos"], dtype=np.float64) + HANDLE_OFFSET * pull, pull


def compute_reward(state, info):
    handle, pull = drawer_handle(state)
    reach = distance(state["eef_pos"], handle)
    opening = min(max(float(state["objects"][CABINET]["joint_qpos"][JOINT_INDEX]) / OPEN_QPOS, 0.0), 1.0)
    stage = 0
    if reach < 0.10:
        stage = 1  # the gripper is near the handle
    if reach < 0.04:
        stage = 2  # the gripper is at the handle
    if opening > 0.15:
        stage = 3  # the drawer is moving
    if opening > 0.5:
        stage = 4  # half open
    if opening > 0.85:
        stage = 5  # nearly open
    reward = STAGE_REWARDS[stage]
    if all(goal["satisfied"] for goal in state["goal"]) or state["success"]:
        reward += COMPLETION_REWARD
    key = handle + 0.05 * pull if stage >= 2 else handle  # at the handle: pull it 5 cm further out
    # Small end-effector shaping toward the key pose of the current stage (at most 0.5, one stage step).
    reward += 0.5 * math.exp(-5.0 * distance(state["eef_pos"], key))
    return float(reward)
