# attack: one huge C-level operation (CPython checks signals inside big-int pow, so the limit still stops it cleanly)
# expect: cpu
def compute_reward(state, info):
    return float(10**10**10)
