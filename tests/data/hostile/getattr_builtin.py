# attack: getattr with a computed name, so no attribute appears in the text
# expect: refused
# guard: NameError: name 'getattr' is not defined
import numpy as np


def compute_reward(state, info):
    name = "l" + "ib"
    getattr(np, name).npyio.os.makedirs(info["marker"])
    return 0.0
