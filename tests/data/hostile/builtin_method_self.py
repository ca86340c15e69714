# attack: a builtin function's __self__ is the builtins module (open, __import__, eval)
# expect: refused
# guard: invalid attribute name because it starts with "_"
def compute_reward(state, info):
    builtins = len.__self__
    builtins.open(info["marker"], "w").write("escaped")
    return 0.0
