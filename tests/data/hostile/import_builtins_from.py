# attack: from builtins import open
# expect: refused
# guard: imports 'builtins'
def compute_reward(state, info):
    from builtins import open

    open(info["marker"], "w").write("escaped")
    return 0.0
