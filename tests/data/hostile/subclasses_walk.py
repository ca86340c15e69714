# attack: the classic ().__class__.__base__.__subclasses__() walk to a class whose __init__ globals hold os
# expect: refused
# guard: invalid attribute name because it starts with "_"
def compute_reward(state, info):
    for cls in ().__class__.__base__.__subclasses__():
        if cls.__name__ == "_wrap_close":
            cls.__init__.__globals__["system"]("touch " + info["marker"])
    return 0.0
