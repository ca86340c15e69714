# attack: raw memory through an array: its ctypes pointer, its buffer, or a writable flag on a read-only view
# expect: refused
# guard: reads .ctypes of a ndarray
def compute_reward(state, info):
    address = state["eef_pos"].ctypes.data
    return float(address)
