# attack: numpy reads files: np.load, np.fromfile, np.loadtxt, np.memmap
# expect: refused
# guard: uses numpy.fromfile
import numpy as np

N = np


def compute_reward(state, info):
    data = N.fromfile("/proc/self/environ", dtype=N.uint8)
    return float(data.size)
