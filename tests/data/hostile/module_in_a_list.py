# attack: hide numpy in a container, then reach numpy.lib.npyio.os through it
# expect: refused
# guard: uses numpy.lib, which is not part of the reward-file contract
import math

import numpy as np

MODULES = [np, math]


def compute_reward(state, info):
    MODULES[0].lib.npyio.os.makedirs(info["marker"])
    return 0.0
