# attack: an array method outside the allow-list that the pre-check does not name (byteswap here; itemset,
#   newbyteorder and others are refused at run time alike)
# expect: refused
# guard: reads .byteswap of a ndarray
def compute_reward(state, info):
    return float(state["eef_pos"].byteswap(True)[0])
