# attack: an 80 GB list
# expect: memory
def compute_reward(state, info):
    return float(len([0] * 10**10))
