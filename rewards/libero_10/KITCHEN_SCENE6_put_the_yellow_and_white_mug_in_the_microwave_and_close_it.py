# Reward for libero_10 / KITCHEN_SCENE6_put_the_yellow_and_white_mug_in_the_microwave_and_close_it: "put the yellow and white mug in the microwave and close it".
# Made by: hand-written by the maintainers to the gen_reward.py contract (no LLM, hence no model and no
#   prompt hash); key poses: targets derived from object positions (no demonstrations).
# Date: 2026-11-22
# Validation: gen_reward.py --check on 24 real states (init states 0-3, each after the wait steps and after
#   1-5 random actions): rewards in [0.1055, 0.1332], 24 distinct values, deterministic. A goal state built
#   in the simulator (objects placed, joints set, all goal predicates true) scores 40.50; init
#   states 0-2 score at most 0.13.
"""Multi-stage dense reward: put the yellow-and-white mug into the microwave (reach, grasp the rim, lift, carry it
in, set it down), then close the door (reach the door, push it shut).

Goal (BDDL): (In white_yellow_mug_1 microwave_1_heating_region) (Close microwave_1). The door starts open (its
hinge joint is -1.58 rad in init state 0; close() holds above -0.005 rad). The mug goes in first, and closing earns
credit only with the mug inside. in() needs the mug's origin (at its base) inside the heating region, a box
24 x 17 x 16 cm around the cavity's centre. The door is not in the state: it swings about a vertical axis through
a hinge point fixed in microwave_1's body frame; the push point is a spot just outside the door's outer face, 18 cm
from the hinge, given for the closed door and rotated by the hinge angle. porcelain_mug_1 is a distractor.
"""

import math

import numpy as np

MICROWAVE = "microwave_1"
REGION = "microwave_1_heating_region"
MUG = "white_yellow_mug_1"
GRASP_HEIGHT = 0.07  # the grasp point (the rim) above the mug's body origin, which is at its base
REACH_NEAR = 0.06  # eef distance to the grasp point once the fingers straddle the rim
CARRY_HEIGHT = 0.02  # eef height above the cavity's centre: the held mug's base just above the cavity floor
ALIGN = 0.05  # the heating region extends 8 cm or more around its centre; aim inside that
HINGE = (-0.1725, -0.088, 0.096)  # the door's hinge point in microwave_1's body frame
PUSH_POINT = (0.18, -0.05, 0.0)  # from the hinge, in the closed door's frame: outside the door's outer face
# Stage rewards, rising: none, near the object, at the grasp point, grasped, lifted, over the target, set down.
STAGE_REWARDS = (0.0, 0.5, 1.5, 3.5, 5.5, 7.0, 8.5)
# Closing stage rewards, rising: none, near the door, at it, a quarter shut, 60% shut, 90% shut.
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
    """Stage reached in closing the door (an index into CLOSE_STAGE_REWARDS) and its key pose, the push point."""
    microwave = state["objects"][MICROWAVE]
    angle = float(microwave["joint_qpos"][0])
    c, s = math.cos(angle), math.sin(angle)
    local = np.array([HINGE[0] + c * PUSH_POINT[0] - s * PUSH_POINT[1],
                      HINGE[1] + s * PUSH_POINT[0] + c * PUSH_POINT[1], HINGE[2] + PUSH_POINT[2]])
    door = np.asarray(microwave["pos"], dtype=np.float64) + rotate(microwave["quat"], local)
    reach = distance(state["eef_pos"], door)
    start = min(float(info["initial"]["objects"][MICROWAVE]["joint_qpos"][0]), -0.3)  # how far open
    shut = min(max(1.0 - angle / start, 0.0), 1.0)
    stage = 0
    if reach < 0.10:
        stage = 1  # the gripper is near the push point
    if reach < 0.04:
        stage = 2  # the gripper is at the push point
    if shut > 0.25:
        stage = 3
    if shut > 0.6:
        stage = 4
    if shut > 0.9:
        stage = 5
    return stage, door


def compute_reward(state, info):
    inside = is_satisfied(state, "in", (MUG, REGION))
    closed = is_satisfied(state, "close", (MICROWAVE,))
    reward = PREDICATE_REWARD * (int(inside) + int(inside and closed))
    key = state["eef_pos"]
    if not inside:
        target = state["objects"][REGION]["pos"]
        stage, key = pick_and_place(state, info, MUG, target, GRASP_HEIGHT, REACH_NEAR, CARRY_HEIGHT, ALIGN)
        reward += STAGE_REWARDS[stage]
    elif not closed:
        stage, key = push_shut(state, info)
        reward += CLOSE_STAGE_REWARDS[stage]
    if all(goal["satisfied"] for goal in state["goal"]) or state["success"]:
        reward += COMPLETION_REWARD
    # Small end-effector shaping toward the key pose of the current stage (at most 0.5, one stage step).
    reward += 0.5 * math.exp(-5.0 * distance(state["eef_pos"], key))
    return float(reward)
