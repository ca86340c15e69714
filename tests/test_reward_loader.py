"""Reward files: the AST allow-list, the error messages, and run-time failures that must stop a run."""

import math

import numpy as np
import pytest

import rollout

GOOD = """
import math
import numpy as np

SCALE = 2.0


def compute_reward(state, info):
    return SCALE * float(np.linalg.norm(state["eef_pos"])) + math.pi
"""


OK = "def compute_reward(state, info):\n    return 0.0\n"


def test_numpy_linalg_and_math_stay_usable(tmp_path):
    source = (
        "import math\nimport numpy as np\nimport numpy.linalg as la\nfrom numpy.linalg import norm\n"
        "def compute_reward(state, info):\n"
        "    return float(np.linalg.norm(state['v']) + norm(state['v']) + la.det(np.eye(2)) + math.cos(0))\n"
    )
    assert load(write_reward(tmp_path, source))({"v": np.array([3.0, 4.0])}, {}) == pytest.approx(12.0)


def write_reward(tmp_path, source, name="reward.py"):
    path = tmp_path / name
    path.write_text(source)
    return path


def load(path):
    return rollout.load_reward_fn("libero_goal", "put_the_bowl_on_the_plate", str(path))


def test_a_good_file_loads_and_computes(tmp_path):
    reward_fn = load(write_reward(tmp_path, GOOD))
    assert reward_fn({"eef_pos": np.array([3.0, 4.0, 0.0])}, {}) == pytest.approx(10.0 + math.pi)
    assert reward_fn.path.endswith("reward.py") and len(reward_fn.sha256) == 64


@pytest.mark.parametrize(
    "source,message",
    [
        ("import os\ndef compute_reward(state, info):\n    return 0.0\n", r"line 1 imports 'os'; only math, numpy, numpy.linalg"),
        ("from subprocess import run\ndef compute_reward(state, info):\n    return 0.0\n", r"imports 'subprocess'"),
        (
            "def compute_reward(state, info):\n    return state.__class__.__name__\n",
            r"line 2 reads the forbidden attribute '__name__'",
        ),
        ("def compute_reward(state, info):\n    return __builtins__\n", r"forbidden name '__builtins__'"),
        ("def compute_reward(state, info):\n    return eval('1')\n", r"line 2 uses the forbidden name 'eval'"),
        ("def compute_reward(state, info)\n    return 0.0\n", r"syntax error at line 1"),
        ("def reward(state, info):\n    return 0.0\n", r"must define `def compute_reward\(state, info\)"),
        ("print('hi')\ndef compute_reward(state, info):\n    return 0.0\n", r"top-level expressions"),
        # numpy reaches the file system and os; only its pure functions are allowed.
        ("import numpy as np\nX = np.lib.npyio.os.environ\n" + OK, r"line 2 uses numpy.lib"),
        ("import numpy\ndef compute_reward(state, info):\n    return numpy.load('x')\n", r"uses numpy.load"),
        ("from numpy import ctypeslib\n" + OK, r"imports 'numpy.ctypeslib'"),
        ("import numpy as np\nm = np\n" + OK, r"uses the module 'np' as a value"),
        ("def compute_reward(state, info):\n    state['eef_pos'].tofile('x')\n", r"forbidden attribute 'tofile'"),
        ("import math\nmath.pi = 3\n" + OK, r"assigns to the attribute 'pi'"),
        ("def compute_reward(state, info):\n    return (x for x in [1]).gi_frame\n", r"forbidden attribute 'gi_frame'"),
    ],
    ids=[
        "import-os", "from-import", "dunder-attribute", "dunder-name", "eval", "syntax-error", "no-function",
        "top-level-call", "numpy-lib-os", "numpy-load", "numpy-ctypeslib", "module-alias", "array-tofile",
        "module-assignment", "generator-frame",
    ],
)
def test_rejected_files_name_the_file_the_line_and_the_fix(tmp_path, source, message):
    marker = tmp_path / "executed"
    path = write_reward(tmp_path, source)
    with pytest.raises(rollout.RewardFileError, match=message) as error:
        load(path)
    assert str(path) in str(error.value)
    assert "python gen_reward.py --suite libero_goal --task-id 8 --provider anthropic --model <model name> --overwrite" in str(error.value)
    assert not marker.exists()


def test_rejected_code_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    source = f"import os\nos.makedirs({str(marker)!r})\ndef compute_reward(state, info):\n    return 0.0\n"
    with pytest.raises(rollout.RewardFileError):
        load(write_reward(tmp_path, source))
    assert not marker.exists()


def test_a_missing_file_names_the_command_that_generates_it(tmp_path):
    with pytest.raises(rollout.RewardFileError) as error:
        rollout.load_reward_fn("libero_goal", "put_the_bowl_on_the_plate", str(tmp_path / "absent.py"))
    assert "absent.py" in str(error.value)
    assert "python gen_reward.py --suite libero_goal --task-id 8" in str(error.value)


def test_the_shipped_file_resolves_by_suite_and_task_name():
    reward_fn = rollout.load_reward_fn("libero_goal", "put_the_bowl_on_the_plate")
    assert reward_fn.path == str(rollout.REWARDS_DIR / "libero_goal" / "put_the_bowl_on_the_plate.py")


@pytest.mark.parametrize(
    "body,message",
    [("return state['missing']", r"raised KeyError: 'missing' at step 7 \(env 1\)"), ("return float('nan')", r"returned nan at step 7")],
)
def test_a_reward_that_fails_at_run_time_stops_with_file_step_and_keys(tmp_path, body, message):
    path = write_reward(tmp_path, f"def compute_reward(state, info):\n    {body}\n")
    state = {"step": 7, "eef_pos": np.zeros(3), "objects": {"plate_1": {}, "akita_black_bowl_1": {}}}
    with pytest.raises(rollout.RewardFileError, match=message) as error:
        rollout.evaluate_reward(load(path), state, {}, env_index=1)
    assert str(path) in str(error.value)
    assert "state keys ['eef_pos', 'objects', 'step']" in str(error.value)
    assert "akita_black_bowl_1, plate_1" in str(error.value)
