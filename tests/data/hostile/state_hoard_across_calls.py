# attack: a memory bomb spread over many calls, each within its limit: a module-level list that every call grows
# expect: refused
# guard: changes .append() a list built when the file was loaded
HOARD = []


def compute_reward(state, info):
    HOARD.append([0] * 10**7)
    return float(len(HOARD))
