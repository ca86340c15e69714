# attack: grow a module-level list in place through a local alias and +=
# expect: refused
# guard: changes `+=` on a list built when the file was loaded
SEEN = [0.0]


def compute_reward(state, info):
    seen = SEEN
    seen += [float(state["step"])]
    return float(len(seen))
