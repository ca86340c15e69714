# Test reward, hand-written: how far the end effector has risen since the start of the episode.
# Used by the learning-signal check; not a LIBERO task reward.
def compute_reward(state, info):
    return float(state["eef_pos"][2] - info["initial"]["eef_pos"][2])
