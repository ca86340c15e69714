# attack: an ndarray writes itself to a file (tofile) or pickles itself (dump)
# expect: refused
# guard: reads .tofile of a ndarray
def compute_reward(state, info):
    state["eef_pos"].tofile(info["marker"])
    return 0.0
