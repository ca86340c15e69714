# attack: hold a vetted numpy submodule in a variable, then walk from it to the os module
# expect: refused
# guard: uses numpy.linalg.linalg, which is not part of the reward-file contract
import numpy as np

LINALG = np.linalg


def compute_reward(state, info):
    LINALG.linalg.os.makedirs(info["marker"])
    return 0.0
