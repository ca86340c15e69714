# attack: import a numpy submodule that holds os
# expect: refused
# guard: imports 'numpy.lib.npyio'
def compute_reward(state, info):
    import numpy.lib.npyio as npyio

    npyio.os.makedirs(info["marker"])
    return 0.0
