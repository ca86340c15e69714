# attack: an exception's traceback leads to frames and their globals
# expect: refused
# guard: invalid attribute name because it starts with "_"
def compute_reward(state, info):
    try:
        return 1 / 0
    except ZeroDivisionError as error:
        error.__traceback__.tb_frame.f_globals["os"].makedirs(info["marker"])
    return 0.0
