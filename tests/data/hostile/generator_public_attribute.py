# attack: the attributes of a generator that RestrictedPython's name list does not cover
# expect: refused
# guard: reads .gi_running of a generator
def compute_reward(state, info):
    generator = (x for x in [1])
    return float(generator.gi_running)
