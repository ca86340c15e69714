# attack: `from numpy import linalg as la` (IMPORT_FROM reads the module without _getattr_), then walk to os
# expect: refused
# guard: uses numpy.linalg.linalg
from numpy import linalg as la


def compute_reward(state, info):
    la.linalg.os.makedirs(info["marker"])
    return 0.0
