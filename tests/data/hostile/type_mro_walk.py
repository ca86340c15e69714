# attack: reach `object` without underscores (np.float64.mro()), then its subclasses
# expect: refused
# guard: reads .mro of a type
import numpy as np


def compute_reward(state, info):
    base = np.float64.mro()[-1]
    return float(len(base.mro()))
