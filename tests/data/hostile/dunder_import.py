# attack: __import__("os") and importlib
# expect: refused
# guard: invalid variable name because it starts with "_"
def compute_reward(state, info):
    __import__("os").makedirs(info["marker"])
    return 0.0
