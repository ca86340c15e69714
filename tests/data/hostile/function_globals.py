# attack: a vetted numpy function's __globals__ hold sys, whose modules hold os
# expect: refused
# guard: invalid attribute name because it starts with "_"
import numpy as np


def compute_reward(state, info):
    np.full.__globals__["sys"].modules["os"].makedirs(info["marker"])
    return 0.0
