# attack: the same traversal through str.format_map and a dict argument
# expect: refused
# guard: reads .format_map of a str
import numpy as np


def compute_reward(state, info):
    raise ValueError("{f.__globals__[sys].modules[os].environ[OPENAI_API_KEY]}".format_map({"f": np.full}))
