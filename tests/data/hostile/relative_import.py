# attack: a relative import reaches the package the file lives in (rewards/, then the trainer's modules)
# expect: refused
# guard: reward files may import only math, numpy, numpy.linalg
def compute_reward(state, info):
    from .. import math

    return math.pi
