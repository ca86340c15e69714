# attack: the escape runs at load time, from a decorator
# expect: refused
# guard: broke the reward-file contract: it uses numpy.lib
import numpy as np

N = np


@N.lib.npyio.os.system
def compute_reward(state, info):
    return 0.0
