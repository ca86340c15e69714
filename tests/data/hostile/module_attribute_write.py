# attack: patch a vetted module (through an alias) so that other code, or later calls, run ours
# expect: refused
# guard: changes a VettedModule
import numpy as np

N = np


def compute_reward(state, info):
    N.sum = compute_reward
    return 0.0
