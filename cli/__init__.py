"""What every script's command line shares, with no simulator or model behind it: the LIBERO suite names and their
step caps, the defaults of the flags the scripts share, UsageError, and `check_flags`, the one way a script checks
its flags. Imports nothing of ours, so the policy side (openvla_policy/) uses it without loading LIBERO or MuJoCo.
"""

from typing import Literal, get_args

BASE_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
# LIBERO-PRO (arXiv 2510.03827) perturbation suites, shipped by the pinned LIBERO distribution as <base>_<key>:
# the base suite's 10 tasks (same names, same task.language), each with its own BDDL files and 50 init states.
PERTURBATIONS = {
    "lan": "the instruction is paraphrased (same scene, same goal)",
    "object": "objects are replaced by look-alikes of another appearance (new object names, so new goal predicates)",
    "swap": "objects start at swapped positions (same objects, same goal)",
    "task": "a different task in the same scene: a new goal and a new instruction",
}
PERTURBED_SUITES = {f"{base}_{key}": base for base in BASE_SUITES for key in PERTURBATIONS}  # suite -> base suite
Suite = Literal[(*BASE_SUITES, "libero_90", *PERTURBED_SUITES)]
SUITES = get_args(Suite)
# Step caps of OpenVLA's LIBERO evaluation, set from the longest demonstration of each suite.
EVAL_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
# Training caps: the paper's 200 for spatial/object/goal; Long's demonstrations run up to 505 steps.
TRAIN_MAX_STEPS = {"libero_spatial": 200, "libero_object": 200, "libero_goal": 200, "libero_10": 520, "libero_90": 400}
for _suite, _base in PERTURBED_SUITES.items():  # a perturbation runs under its base suite's caps
    EVAL_MAX_STEPS[_suite], TRAIN_MAX_STEPS[_suite] = EVAL_MAX_STEPS[_base], TRAIN_MAX_STEPS[_base]


CAMERA_SIZE = 256  # --camera-size: agentview pixels, as OpenVLA's LIBERO checkpoints saw them (the protocol's)
STEP_TIMEOUT = 60.0  # --step-timeout: seconds an env step may take before its worker counts as hung
RESET_TIMEOUT = 300.0  # --reset-timeout: building a new task's scene takes longest


def base_suite(suite: str) -> str:
    """libero_goal for libero_goal_swap (and every perturbation of libero_goal); a base suite is its own."""
    return PERTURBED_SUITES.get(suite, suite)


class UsageError(ValueError):
    """Bad user input: the scripts print it as one line naming the flag, without a traceback."""


def check_flags(args, problems: list) -> None:
    """Raise UsageError for the first (failed, flag, fix) that failed: "<flag> <its value in args>: <fix>"."""
    for failed, flag, fix in problems:
        if failed:
            value = getattr(args, flag[2:].replace("-", "_"))
            shown = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
            raise UsageError(f"{flag} {shown}: {fix}")
