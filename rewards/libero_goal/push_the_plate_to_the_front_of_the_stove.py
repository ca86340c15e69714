# Reward for libero_goal / push_the_plate_to_the_front_of_the_stove: "push the plate to the front of the stove".
# Made by: hand-written by the maintainers to the gen_reward.py contract (no LLM, hence no model and no
#   prompt hash); key poses: targets derived from object positions (no demonstrations).
# Date: 2026-11-22
# Validation: gen_reward.py --check on 24 real states (init states 0-3, each after the wait steps and after
#   1-5 random actions): rewards in [0.0628, 0.07171], 24 distinct values, deterministic. A goal state built
#   in the simulator (objects placed, joints set, all goal predicates true) scores 28.58; init
#   states 0-2 score at most 0.07.
"""Multi-stage dense reward: reach the side of the plate away from the target, then push the plate onto the
region in front of the stove.

Goal (BDDL): (On plate_1 main_table_stove_front_region). The region is an 8 cm square on the table; LIBERO's on()
for a table region needs the plate's origin inside its footprint and at most 10 cm above it. Progress is the
fraction of the plate's initial distance to the region that it has covered.
"""

import math

import numpy as np

PLATE = "plate_1"
TARGET = "main_table_stove_front_region"
PUSH_BEHIND = 0.09  # the push point lies this far behind the plate's centre (its radius is 7 cm)
PUSH_HEIGHT = 0.02  # eef height above the plate's origin when pushing its rim
ALIGN = 0.035  # the region extends 4 cm around its centre
# Stage rewards, rising: none, near the push point, at it, a quarter of the way, half way, three quarters, arrived.
STAGE_REWARDS = (0.0, 0.5, 1.5, 3.5, 5.0, 6.5, 8.5)
COMPLETION_REWARD = 20.0  # all goal predicates hold: far above every stage reward


def distance(a, b):
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def compute_reward(state, info):
    plate = np.asarray(state["objects"][PLATE]["pos"], dtype=np.float64)
    start = np.asarray(info["initial"]["objects"][PLATE]["pos"], dtype=np.float64)
    target = np.asarray(state["objects"][TARGET]["pos"], dtype=np.float64)
    gap = distance(plate[:2], target[:2])
    direction = (target[:2] - plate[:2]) / max(gap, 1e-6)  # the way the plate must go
    push_point = np.array([plate[0] - PUSH_BEHIND * direction[0], plate[1] - PUSH_BEHIND * direction[1],
                           plate[2] + PUSH_HEIGHT])
    reach = distance(state["eef_pos"], push_point)
    progress = 1.0 - gap / max(distance(start[:2], target[:2]), 1e-6)
    stage = 0
    if reach < 0.10:
        stage = 1  # the gripper is near the push point
    if reach < 0.04:
        stage = 2  # the gripper is at the push point
    if progress > 0.25:
        stage = 3
    if progress > 0.5:
        stage = 4
    if progress > 0.75:
        stage = 5
    if gap < ALIGN:
        stage = 6  # the plate is on the region
    reward = STAGE_REWARDS[stage]
    if all(goal["satisfied"] for goal in state["goal"]) or state["success"]:
        reward += COMPLETION_REWARD
    key = push_point  # it moves with the plate, so following it keeps pushing
    # Small end-effector shaping toward the key pose of the current stage (at most 0.5, one stage step).
    reward += 0.5 * math.exp(-5.0 * distance(state["eef_pos"], key))
    return float(reward)
