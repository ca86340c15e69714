# attack: a class with dunder methods that Python calls implicitly (__del__, __format__, __array_interface__)
# expect: refused
# guard: NameError: __build_class__ not found
def compute_reward(state, info):
    class Sneaky:
        pass

    return float(len(str(Sneaky)))
