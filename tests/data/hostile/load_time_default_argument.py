# attack: the escape runs at load time, from a default argument
# expect: refused
# guard: broke the reward-file contract: it uses numpy.lib
import numpy as np

N = np


def helper(leak=N.lib.npyio.os.makedirs("hostile-load-time-marker")):
    return leak


def compute_reward(state, info):
    return 0.0
