# attack: a 2 GB array: the machine has the memory, the limit must stop it
# expect: memory
import numpy as np


def compute_reward(state, info):
    return float(np.ones(2**28).sum())
