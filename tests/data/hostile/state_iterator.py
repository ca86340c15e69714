# attack: a module-level generator that each call advances (builtins consume it in C, past _getiter_)
# expect: refused
# guard: keeps an iterator built at load time
COUNTER = (k for k in range(10**9))


def compute_reward(state, info):
    return float(max(zip(COUNTER, [0]))[0])
