# attack: a 100 GB string
# expect: memory
def compute_reward(state, info):
    return float(len("a" * 10**11))
