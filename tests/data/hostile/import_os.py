# attack: import os inside the function
# expect: refused
# guard: imports 'os'; reward files may import only math, numpy, numpy.linalg
def compute_reward(state, info):
    import os

    os.makedirs(info["marker"])
    return 0.0
