# Reward for libero_10 / KITCHEN_SCENE4_put_the_black_bowl_in_the_bottom_drawer_of_the_cabinet_and_close_it: "put the black bowl in the bottom drawer of the cabinet and close it".
# Made by: hand-written by the maintainers to the gen_reward.py contract (no LLM, hence no model and no
#   prompt hash); key poses: targets derived from object positions (no demonstrations).
# Date: 2026-11-22
# Validation: gen_reward.py --check on 24 real states (init states 0-3, each after the wait steps and after
#   1-5 random actions): rewards in [0.0812, 0.09775], 24 distinct values, deterministic. A goal state built
#   in the simulator (objects placed, joints set, all goal predicates true) scores 40.50; init
#   states 0-2 score at most 0.09.
"""Multi-stage dense reward: put the black bowl into the open bottom drawer (reach, grasp the rim, lift, carry
over the drawer, lower it in), then close the drawer (reach its front, push it shut).

Goal (BDDL): (Close white_cabinet_1_bottom_region) (In akita_black_bowl_1 white_cabinet_1_bottom_region). The
bottom drawer starts open. The bowl goes in first, and closing earns credit only with the bowl inside: closing
the empty drawer first is a dead end. in() needs the bowl's origin inside the drawer's region, a box about
20 x 15 x 6 cm that moves with the drawer; close() holds when the drawer's slide joint (index 2 of
white_cabinet_1's joint_qpos: top, middle, bottom) is above 0, pushed fully shut. The drawer's front (its handle)
sits 11.3 cm in front of the region's centre along the pull direction, the region's -y axis.
"""

import math

import numpy as np

CABINET = "white_cabinet_1"
DRAWER = "white_cabinet_1_bottom_region"
JOINT_INDEX = 2  # the bottom drawer in white_cabinet_1's joint_qpos (top, middle, bottom)
HANDLE_OFFSET = 0.113  # handle distance in front of the drawer region's centre, along the pull direction
BOWL = "akita_black_bowl_1"
GRASP_HEIGHT = 0.03  # the grasp point (the rim) above the bowl's body origin, which is at its bottom
REACH_NEAR = 0.06  # eef distance to the grasp point once the fingers straddle the rim (radius about 5 cm)
CARRY_HEIGHT = 0.10  # eef height above the drawer region's centre while carrying the bowl over it
ALIGN = 0.04  # in() accepts 7 cm or more around the region's centre; aim inside that
# Stage rewards, rising: none, near the object, at the grasp point, grasped, lifted, over the target, set down.
STAGE_REWARDS = (0.0, 0.5, 1.5, 3.5, 5.5, 7.0, 8.5)
# Closing stage rewards, rising: none, near the drawer front, at it, a quarter shut, 60% shut, 90% shut.
CLOSE_STAGE_REWARDS = (0.0, 0.5, 1.5, 3.5, 5.5, 7.5)
PREDICATE_REWARD = 10.0  # per satisfied goal predicate: partial credit, above every stage reward
COMPLETION_REWARD = 20.0  # all goal predicates hold: far above every stage reward


def distance(a, b):
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


def rotate(quat, vec):
    """`vec` rotated by the (x, y, z, w) quaternion `quat`."""
    u = np.asarray(quat[:3], dtype=np.float64)
    v = np.asarray(vec, dtype=np.float64)
    return v + 2.0 * np.cross(u, np.cross(u, v) + quat[3] * v)


def is_satisfied(state, predicate, args):
    """Truth value of one BDDL goal predicate, e.g. ("in", ("butter_1", "basket_1_contain_region"))."""
    for goal in state["goal"]:
        if goal["predicate"] == predicate and list(goal["args"]) == list(args):
            return bool(goal["satisfied"])
    return False


def drawer_handle(state):
    """World position of the drawer's handle and the drawer's unit pull direction (the region's -y axis)."""
    region = state["objects"][DRAWER]
    pull = rotate(region["quat"], (0.0, -1.0, 0.0))
    return np.asarray(region["pos"], dtype=np.float64) + HANDLE_OFFSET * pull, pull


def pick_and_place(state, info, name, target_pos, grasp_height, reach_near, carry_height, align):
    """Stage reached in moving object `name` onto or into `target_pos` (an index into STAGE_REWARDS) and the
    end-effector key pose of that stage.

    grasp_height: grasp point above the object's body origin; reach_near: eef distance to that point once the
    fingers are around the object; carry_height: eef height above the target while carrying; align: the xy
    distance to the target that the goal predicate accepts.
    """
    obj = state["objects"][name]
    pos = np.asarray(obj["pos"], dtype=np.float64)
    start = np.asarray(info["initial"]["objects"][name]["pos"], dtype=np.float64)
    target_pos = np.asarray(target_pos, dtype=np.float64)
    grasp_point = pos + np.array([0.0, 0.0, grasp_height])
    reach = distance(state["eef_pos"], grasp_point)
    moved = distance(pos, start) > 0.04
    # The grasp flag flickers while an object swings in the fingers: a raised object at the fingers counts as held.
    held = bool(obj["grasped"]) or (reach < reach_near + 0.02 and pos[2] > start[2] + 0.02)
    to_target = distance(pos[:2], target_pos[:2])
    lowered = pos[2] < target_pos[2] + carry_height - grasp_height
    stage = 0
    if reach < 0.10:
        stage = 1  # the gripper is near the object
    if reach < reach_near:
        stage = 2  # the gripper is at the grasp point
    if held:
        stage = 3  # grasped
    if held and moved:
        stage = 4  # lifted off its support
    if held and moved and to_target < 0.10:
        stage = 5  # carried over the target
    if moved and to_target < align and lowered:
        stage = 6  # set down on or into the target
    key = grasp_point if stage < 3 else target_pos + np.array([0.0, 0.0, carry_height])
    return stage, key


def push_shut(state, info):
    """Stage reached in closing the drawer (an index into CLOSE_STAGE_REWARDS) and its key pose, the drawer front."""
    handle, pull = drawer_handle(state)
    front = handle + 0.03 * pull  # just outside the drawer front, to push it in
    reach = distance(state["eef_pos"], front)
    start = min(float(info["initial"]["objects"][CABINET]["joint_qpos"][JOINT_INDEX]), -0.05)  # how far open
    shut = min(max(1.0 - float(state["objects"][CABINET]["joint_qpos"][JOINT_INDEX]) / start, 0.0), 1.0)
    stage = 0
    if reach < 0.10:
        stage = 1  # the gripper is near the drawer front
    if reach < 0.04:
        stage = 2  # the gripper is at the drawer front
    if shut > 0.25:
        stage = 3
    if shut > 0.6:
        stage = 4
    if shut > 0.9:
        stage = 5
    return stage, front


def compute_reward(state, info):
    inside = is_satisfied(state, "in", (BOWL, DRAWER))
    closed = is_satisfied(state, "close", (DRAWER,))
    reward = PREDICATE_REWARD * (int(inside) + int(inside and closed))
    key = state["eef_pos"]
    if not inside:
        target = state["objects"][DRAWER]["pos"]
        stage, key = pick_and_place(state, info, BOWL, target, GRASP_HEIGHT, REACH_NEAR, CARRY_HEIGHT, ALIGN)
        reward += STAGE_REWARDS[stage]
    elif not closed:
        stage, key = push_shut(state, info)
        reward += CLOSE_STAGE_REWARDS[stage]
    if all(goal["satisfied"] for goal in state["goal"]) or state["success"]:
        reward += COMPLETION_REWARD
    # Small end-effector shaping toward the key pose of the current stage (at most 0.5, one stage step).
    reward += 0.5 * math.exp(-5.0 * distance(state["eef_pos"], key))
    return float(reward)
