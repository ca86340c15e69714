# attack: a loop inside one C call (builtin sum over a range), which never runs a bytecode of the reward
# expect: killed
def compute_reward(state, info):
    return float(sum(range(10**15)))
