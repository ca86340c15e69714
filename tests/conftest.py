"""Shared fixtures: the repo on sys.path, and one tiny VLA built from scratch for the whole session."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """A fresh TGRPO_CACHE, so `--model tiny` is built through the real build path once per session."""
    cache = tmp_path_factory.mktemp("tgrpo_cache")
    previous = os.environ.get("TGRPO_CACHE")
    os.environ["TGRPO_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("TGRPO_CACHE", None)
    else:
        os.environ["TGRPO_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_policy(tiny_cache):
    import openvla_policy

    return openvla_policy.load_vla("tiny", "libero_goal", device="cpu")


@pytest.fixture(scope="session")
def bowl_on_plate():
    """libero_goal task 8 (put the bowl on the plate), init state 0 with the bowl placed on the plate in the
    simulator and settled: a real goal state, as a flattened MuJoCo state."""
    import libero_envs

    task = libero_envs.get_task("libero_goal", 8)
    env = libero_envs.make_env(libero_envs.task_bddl_path(task), render=False, horizon=100)
    libero_envs.reset_env(env, libero_envs.get_init_states("libero_goal", 8)[0])
    plate = env.env.sim.data.body_xpos[env.env.obj_body_id["plate_1"]].copy()
    joint = env.env.objects_dict["akita_black_bowl_1"].joints[-1]
    env.env.sim.data.set_joint_qpos(joint, np.concatenate([plate + [0, 0, 0.02], [1.0, 0, 0, 0]]))
    env.env.sim.forward()
    for _ in range(20):
        env.step(np.zeros(7))
    assert env.env._check_success()
    state = env.get_sim_state().copy()
    env.close()
    return state


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:robosuite")
