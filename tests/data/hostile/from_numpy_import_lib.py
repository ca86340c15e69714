# attack: from numpy import lib (IMPORT_FROM reads the attribute directly on the module stand-in)
# expect: refused
# guard: uses numpy.lib
def compute_reward(state, info):
    from numpy import lib

    lib.npyio.os.makedirs(info["marker"])
    return 0.0
