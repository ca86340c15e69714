# attack: import sys under another name, then sys.modules["os"]
# expect: refused
# guard: imports 'sys'
def compute_reward(state, info):
    import sys as numpy

    numpy.modules["os"].makedirs(info["marker"])
    return 0.0
