# attack: the same big-int bomb at load time, from a top-level constant
# expect: cpu
HUGE = 10**10**10


def compute_reward(state, info):
    return 0.0
