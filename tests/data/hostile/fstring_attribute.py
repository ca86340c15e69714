# attack: the attribute walk inside an f-string expression, where it is easy to overlook
# expect: refused
# guard: uses numpy.lib
import numpy as np


def compute_reward(state, info):
    text = f"{np.lib.npyio.os.makedirs(info['marker'])}"
    return float(len(text))
