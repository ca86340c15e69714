# attack: an 800 GB array
# expect: memory
import numpy as np


def compute_reward(state, info):
    return float(np.zeros(10**11).sum())
