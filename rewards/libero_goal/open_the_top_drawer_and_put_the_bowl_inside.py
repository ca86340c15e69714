# Reward for libero_goal / open_the_top_drawer_and_put_the_bowl_inside: "open the top drawer and put the bowl inside".
# Made by: hand-written by the maintainers to the gen_reward.py contract (no LLM, hence no model and no
#   prompt hash); key poses: targets derived from object positions (no demonstrations).
# Date: 2026-11-22
# Validation: gen_reward.py --check on 24 real states (init states 0-3, each after the wait steps and after
#   1-5 random actions): rewards in [0.1133, 0.1291], 24 distinct values, deterministic. A goal state built
#   in the simulator (objects placed, joints set, all goal predicates true) scores 33.59; init
#   states 0-2 score at most 0.12.
"""Multi-stage dense reward: open the top drawer (reach the handle, pull), then put the bowl in it (reach, grasp
the rim, lift, carry over the drawer, lower it in).

Goal (BDDL): (In akita_black_bowl_1 wooden_cabinet_1_top_region). The drawer starts closed, so the bowl stages
count only once the slide joint is 80% of the way to LIBERO's open() threshold (-0.14 m), on top of a reward for
the open drawer. in() needs the bowl's origin inside the drawer's region, a box about 20 x 15 x 6 cm that moves
with the drawer; joint_qpos of wooden_cabinet_1 lists the top, middle and bottom drawers in that order. The
handle sits 11.3 cm in front of the region's centre along the pull direction, the region's -y axis.
"""

import math

import numpy as np

CABINET = "wooden_cabinet_1"
DRAWER = "wooden_cabinet_1_top_region"
JOINT_INDEX = 0  # the top drawer in wooden_cabinet_1's joint_qpos (top, middle, bottom)
OPEN_QPOS = -0.14  # open() threshold of the slide joint
OPEN_ENOUGH = 0.8  # fraction of OPEN_QPOS at which the bowl fits in
HANDLE_OFFSET = 0.113  # handle distance in front of the drawer region's centre, along the pull direction
OBJECT = "akita_black_bowl_1"
GRASP_HEIGHT = 0.03  # the grasp point (the rim) above the bowl's body origin, which is at its bottom
REACH_NEAR = 0.06  # eef distance to the grasp point once the fingers straddle the rim (radius about 5 cm)
CARRY_HEIGHT = 0.10  # eef height above the drawer region's centre while carrying the bowl over it
ALIGN = 0.04  # in() accepts 7 cm or more around the region's centre; aim inside that
# Drawer stage rewards, rising: none, near the handle, at the handle, drawer moving, half open.
DRAWER_STAGE_REWARDS = (0.0, 0.5, 1.5, 2.5, 3.5)
OPENED_REWARD = 5.0  # the drawer is open enough: the bowl stages below add to this
# Bowl stage rewards, rising: none, near the bowl, at the grasp point, grasped, lifted, over the drawer, set down.
STAGE_REWARDS = (0.0, 0.5, 1.5, 3.5, 5.5, 7.0, 8.5)
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


def compute_reward(state, info):
    done = all(goal["satisfied"] for goal in state["goal"]) or state["success"]
    handle, pull = drawer_handle(state)
    reach = distance(state["eef_pos"], handle)
    opening = min(max(float(state["objects"][CABINET]["joint_qpos"][JOINT_INDEX]) / OPEN_QPOS, 0.0), 1.0)
    if opening < OPEN_ENOUGH and not done:
        stage = 0
        if reach < 0.10:
            stage = 1  # the gripper is near the handle
        if reach < 0.04:
            stage = 2  # the gripper is at the handle
        if opening > 0.15:
            stage = 3  # the drawer is moving
        if opening > 0.5:
            stage = 4  # half open
        reward = DRAWER_STAGE_REWARDS[stage]
        key = handle + 0.05 * pull if stage >= 2 else handle  # at the handle: pull it 5 cm further out
    else:
        target = state["objects"][DRAWER]["pos"]
        stage, key = pick_and_place(state, info, OBJECT, target, GRASP_HEIGHT, REACH_NEAR, CARRY_HEIGHT, ALIGN)
        reward = OPENED_REWARD + STAGE_REWARDS[stage]
    if done:
        reward += COMPLETION_REWARD
    # Small end-effector shaping toward the key pose of the current stage (at most 0.5, one stage step).
    reward += 0.5 * math.exp(-5.0 * distance(state["eef_pos"], key))
    return float(reward)
