"""The trainer's side of the reward-file contract: a file is read and checked without running any of it, and a
bad or missing file is named with the line and the command that fixes it."""

import pytest

import rewards
import rollout

OK = "def compute_reward(state, info):\n    return 0.0\n"
FIX = "python gen_reward.py --suite libero_goal --task-ids 8 --provider anthropic --llm <model name> --overwrite"


def read(tmp_path, source):
    path = tmp_path / "reward.py"
    path.write_text(source)
    return path, rollout.read_reward_file("libero_goal", "put_the_bowl_on_the_plate", str(path))


def test_a_good_file_is_read_with_its_hash(tmp_path):
    path, reward_file = read(tmp_path, "import math\nimport numpy as np\n" + OK)
    assert reward_file.path == str(path) and reward_file.source.startswith("import math")
    assert len(reward_file.sha256) == 64


@pytest.mark.parametrize(
    "source,message",
    [
        ("import os\n" + OK, r"line 1 imports 'os'; only math, numpy, numpy.linalg"),
        ("def compute_reward(state, info)\n    return 0.0\n", r"syntax error at line 1"),
        ("def reward(state, info):\n    return 0.0\n", r"must define `def compute_reward\(state, info\)"),
        ("import numpy as np\nX = np.lib.npyio.os.environ\n" + OK, r"line 2 uses numpy.lib"),
        ("def compute_reward(state, info):\n    return state.__class__\n", r"forbidden attribute '__class__'"),
    ],
    ids=["import-os", "syntax-error", "no-function", "numpy-lib-os", "dunder"],
)
def test_rejected_files_name_the_file_the_line_and_the_fix(tmp_path, source, message):
    with pytest.raises(rewards.RewardFileError, match=message) as error:
        read(tmp_path, source)
    assert str(tmp_path / "reward.py") in str(error.value) and FIX in str(error.value)


def test_reading_a_file_never_runs_it(tmp_path):
    # Valid under the contract, but its top level would fail if it ran: reading must not run it.
    _, reward_file = read(tmp_path, "X = 1 / 0\n" + OK)
    assert reward_file.source.startswith("X = 1 / 0")


def test_a_missing_file_names_the_command_that_generates_it(tmp_path):
    with pytest.raises(rewards.RewardFileError) as error:
        rollout.read_reward_file("libero_goal", "put_the_bowl_on_the_plate", str(tmp_path / "absent.py"))
    assert "absent.py" in str(error.value) and FIX.removesuffix(" --overwrite") in str(error.value)


def test_the_shipped_file_resolves_by_suite_and_task_name():
    reward_file = rollout.read_reward_file("libero_goal", "put_the_bowl_on_the_plate")
    assert reward_file.path.endswith("rewards/libero_goal/put_the_bowl_on_the_plate.py")
