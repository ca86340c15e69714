# attack: keep state between calls by rebinding a module-level name
# expect: refused
# guard: changed the module-level name(s) TOTAL
TOTAL = 0.0


def compute_reward(state, info):
    global TOTAL
    TOTAL = TOTAL + 1.0
    return TOTAL
