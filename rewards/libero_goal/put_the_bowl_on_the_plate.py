# Reward for libero_goal / put_the_bowl_on_the_plate: "put the bowl on the plate".
# Made by: hand-written by the maintainers, to the gen_reward.py contract (no LLM); targets derived from
#   object positions (no demonstrations).
# Date: 2026-11-22
"""Multi-stage dense reward: reach the bowl, grasp it, lift it, carry it above the plate, set it down."""

import numpy as np

BOWL = "akita_black_bowl_1"
PLATE = "plate_1"


def compute_reward(state, info):
    bowl = state["objects"][BOWL]["pos"]
    plate = state["objects"][PLATE]["pos"]
    table_z = info["initial"]["objects"][BOWL]["pos"][2]
    eef_to_bowl = float(np.linalg.norm(state["eef_pos"] - bowl))
    bowl_to_plate_xy = float(np.linalg.norm(bowl[:2] - plate[:2]))
    grasped = state["objects"][BOWL]["grasped"]

    # Constant stage rewards at proximity thresholds, rising per stage.
    reward = 0.0
    if eef_to_bowl < 0.10:
        reward += 0.5
    if eef_to_bowl < 0.04:
        reward += 1.0
    if grasped:
        reward += 2.0
        if bowl[2] > table_z + 0.05:
            reward += 2.0
            if bowl_to_plate_xy < 0.10:
                reward += 3.0
    if state["goal"][0]["satisfied"] or state["success"]:
        reward += 20.0

    # End-effector shaping toward the key pose of the current stage (bowl, then above the plate).
    target = plate + np.array([0.0, 0.0, 0.10]) if grasped else bowl
    reward += 0.5 * float(np.exp(-5.0 * np.linalg.norm(state["eef_pos"] - target)))
    return reward
