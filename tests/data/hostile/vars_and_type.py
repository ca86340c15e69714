# attack: vars() of a module and type() of a value, then their dictionaries
# expect: refused
# guard: NameError: name 'vars' is not defined
import numpy as np


def compute_reward(state, info):
    namespace = vars(np)
    namespace["lib"].npyio.os.makedirs(info["marker"])
    return float(len(type(state).keys(state)))
