# attack: assign an array's dtype or shape (reinterpreting its memory)
# expect: refused
# guard: assigns to the attribute 'dtype'
def compute_reward(state, info):
    array = state["eef_pos"]
    array.dtype = "int64"
    return float(array[0])
