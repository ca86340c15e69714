# Reward for libero_10 / LIVING_ROOM_SCENE6_put_the_white_mug_on_the_plate_and_put_the_chocolate_pudding_to_the_right_of_the_plate: "put the white mug on the plate and put the chocolate pudding to the right of the plate".
# Made by: hand-written by the maintainers to the gen_reward.py contract (no LLM, hence no model and no
#   prompt hash); key poses: targets derived from object positions (no demonstrations).
# Date: 2026-11-22
# Validation: gen_reward.py --check on 24 real states (init states 0-3, each after the wait steps and after
#   1-5 random actions): rewards in [0.1255, 0.1833], 24 distinct values, deterministic. A goal state built
#   in the simulator (objects placed, joints set, all goal predicates true) scores 40.50; init
#   states 0-2 score at most 0.16.
"""Multi-stage dense reward per object: reach, grasp, lift, carry over the target, set it down; the white mug onto the
plate first, then the chocolate pudding to the right of the plate.

Goal (BDDL): (On porcelain_mug_1 plate_1) (On chocolate_pudding_1 living_room_table_plate_right_region). Each
satisfied predicate earns partial credit; the stages shape the first object not yet in place. The mug's on() needs
it touching the plate and the centres within 3 cm; the pudding's target is a 10 cm square table region (its site
sits about 2 cm below the table top).
"""

import math

import numpy as np

PREDICATE = "on"
# In order: (object, target, grasp height, reach distance, carry height, xy tolerance); see pick_and_place.
# xy tolerance: the plate needs 3 cm; the table region accepts 5 cm around its centre.
STEPS = (
    # the mug's rim is 7 cm above its base
    ("porcelain_mug_1", "plate_1", 0.07, 0.06, 0.14, 0.03),
    # flat box, 3 cm thick
    ("chocolate_pudding_1", "living_room_table_plate_right_region", 0.00, 0.04, 0.10, 0.04),
)
# Stage rewards, rising: none, near the object, at the grasp point, grasped, lifted, over the target, set down.
STAGE_REWARDS = (0.0, 0.5, 1.5, 3.5, 5.5, 7.0, 8.5)
PREDICATE_REWARD = 10.0  # per satisfied goal predicate: partial credit, above every stage reward
COMPLETION_REWARD = 20.0  # all goal predicates hold: far above every stage reward


def distance(a, b):
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)))


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


def compute_reward(state, info):
    reward = PREDICATE_REWARD * sum(1 for goal in state["goal"] if goal["satisfied"])
    key = state["eef_pos"]
    for name, target, grasp_height, reach_near, carry_height, align in STEPS:
        if not is_satisfied(state, PREDICATE, (name, target)):  # the first object not yet in place
            target_pos = state["objects"][target]["pos"]
            stage, key = pick_and_place(state, info, name, target_pos, grasp_height, reach_near, carry_height, align)
            reward += STAGE_REWARDS[stage]
            break
    if all(goal["satisfied"] for goal in state["goal"]) or state["success"]:
        reward += COMPLETION_REWARD
    # Small end-effector shaping toward the key pose of the current stage (at most 0.5, one stage step).
    reward += 0.5 * math.exp(-5.0 * distance(state["eef_pos"], key))
    return float(reward)
