# attack: memory that grows 128 MB at a time until something stops it (np.zeros: address space, no page touched)
# expect: memory
import numpy as np


def compute_reward(state, info):
    hoard = []
    while True:
        hoard.append(np.zeros(2**24))
