# attack: keep state between calls in a list held by a closure built at load time
# expect: refused
# guard: changes .append() a list built when the file was loaded
def make_counter():
    box = []

    def count(x):
        box.append(x)
        return len(box)

    return count


COUNT = make_counter()


def compute_reward(state, info):
    return float(COUNT(state["step"]))
