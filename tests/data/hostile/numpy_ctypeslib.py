# attack: np.ctypeslib loads shared libraries and turns addresses into arrays
# expect: refused
# guard: uses numpy.ctypeslib
import numpy as np

N = np


def compute_reward(state, info):
    libc = N.ctypeslib.load_library("libc", "/lib/x86_64-linux-gnu")
    return float(libc.getpid())
