# attack: str.format walks attributes and keys inside the template, which no AST check sees: np.full's globals
#   -> sys.modules -> os.environ -> the API key (this works in plain Python)
# expect: refused
# guard: reads .format of a str
import numpy as np

TEMPLATE = "{0.__globals__[sys].modules[os].environ[OPENAI_API_KEY]}"


def compute_reward(state, info):
    render = TEMPLATE.format
    raise ValueError(render(np.full))
