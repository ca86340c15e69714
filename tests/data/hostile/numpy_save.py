# attack: numpy's file doors through an alias of the module: np.save writes a file
# expect: refused
# guard: uses numpy.save
import numpy as np

N = np


def compute_reward(state, info):
    N.save(info["marker"], N.zeros(3))
    return 0.0
