# attack: ndarray.dump pickles the array into a file
# expect: refused
# guard: reads .dump of a ndarray
def compute_reward(state, info):
    array = state["eef_pos"]
    array.dump(info["marker"])
    return 0.0
