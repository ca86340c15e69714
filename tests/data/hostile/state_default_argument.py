# attack: keep state between calls in a mutable default argument
# expect: refused
# guard: changes an item of a dict built when the file was loaded
def remember(step, seen={}):
    seen[step] = len(seen)
    return len(seen)


def compute_reward(state, info):
    return float(remember(state["step"]))
