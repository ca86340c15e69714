"""The LIBERO env under OpenVLA's conventions, and the worker pool, on the real simulator."""

import os
import signal

import numpy as np
import pytest

import rewards
import libero_envs
import openvla_image
from libero.libero.envs import OffScreenRenderEnv

ONE_TASK_PER_SUITE = [
    ("libero_spatial", 0),
    ("libero_object", 0),
    ("libero_goal", 8),
    ("libero_10", 0),
    ("libero_90", 0),
]


def bddl(suite, task_id):
    return libero_envs.task_bddl_path(libero_envs.get_task(suite, task_id))


@pytest.mark.parametrize("suite,task_id", ONE_TASK_PER_SUITE)
def test_each_suite_constructs_resets_and_steps_past_the_wait(suite, task_id):
    init_states = libero_envs.get_init_states(suite, task_id)
    assert init_states.shape[0] == 50
    env = libero_envs.make_env(bddl(suite, task_id), render=False, horizon=100)
    obs = libero_envs.reset_env(env, init_states[0])
    assert env.env.timestep == libero_envs.NUM_WAIT_STEPS
    state = rewards.build_reward_state(env, obs, step=0, success=False)
    # The wait steps let dropped objects come to rest on the table (z near 0.9 m, not still falling).
    velocities = env.env.sim.data.qvel
    assert np.abs(velocities).max() < 0.5
    for _ in range(5):
        obs, reward, done, info = env.step(np.zeros(7))
    assert obs["robot0_eef_pos"].shape == (3,) and not done
    assert state["goal"] and all(not g["satisfied"] for g in state["goal"])
    env.close()


def test_unknown_suite_and_task_id_are_explained():
    with pytest.raises(libero_envs.UsageError, match="--suite 'libero_gaol' is unknown; choose one of .*libero_goal"):
        libero_envs.get_task("libero_gaol", 0)
    with pytest.raises(libero_envs.UsageError, match="--task-ids 10: libero_goal has tasks 0..9"):
        libero_envs.get_task("libero_goal", 10)


def test_stepping_to_the_cap_raises_nothing_although_robosuite_would():
    max_steps = 40
    env = libero_envs.make_env(bddl("libero_goal", 8), render=False, horizon=libero_envs.env_horizon(max_steps))
    libero_envs.reset_env(env, libero_envs.get_init_states("libero_goal", 8)[0])
    for _ in range(max_steps):
        env.step(np.zeros(7))
    # The horizon trap that env_horizon avoids: past robosuite's own horizon the next step raises.
    for _ in range(env.env.horizon - env.env.timestep):
        env.step(np.zeros(7))
    with pytest.raises(ValueError, match="terminated episode"):
        env.step(np.zeros(7))


def render_with_bowl_at(env, position):
    """The policy's view (preprocessed) with the bowl moved to `position` (or far out of view)."""
    joint = env.env.objects_dict["akita_black_bowl_1"].joints[-1]
    env.env.sim.data.set_joint_qpos(joint, np.concatenate([position, [1.0, 0, 0, 0]]))
    obs = env.regenerate_obs_from_state(env.get_sim_state())
    return openvla_image.preprocess_image(obs["agentview_image"]).astype(int)


def centroid_of_change(image, baseline):
    rows, cols = np.nonzero(np.abs(image - baseline).sum(-1) > 60)
    assert len(rows) > 20, "the moved object is not visible"
    return rows.mean(), cols.mean()


def test_policy_image_is_upright():
    env = libero_envs.make_env(bddl("libero_goal", 8), render=True, horizon=100)
    libero_envs.reset_env(env, libero_envs.get_init_states("libero_goal", 8)[0])
    baseline = render_with_bowl_at(env, np.array([5.0, 5.0, 0.0]))
    low = centroid_of_change(render_with_bowl_at(env, np.array([0.0, 0.0, 0.95])), baseline)
    high = centroid_of_change(render_with_bowl_at(env, np.array([0.0, 0.0, 1.25])), baseline)
    left = centroid_of_change(render_with_bowl_at(env, np.array([0.0, 0.15, 0.95])), baseline)
    assert high[0] < low[0] - 10, "higher in the world must be higher in the image"
    # The agentview camera faces the robot, so the world's +y is the viewer's left. A plain vertical flip
    # (instead of the 180-degree rotation) would pass the check above and fail this one.
    assert left[1] < low[1] - 10
    assert openvla_image.preprocess_image(np.zeros((256, 256, 3), np.uint8)).shape == (224, 224, 3)
    env.close()


def spec(max_steps=20):
    return libero_envs.EnvSpec(bddl("libero_goal", 8), libero_envs.env_horizon(max_steps), camera_size=128)


def test_envs_reset_to_the_same_init_state_observe_the_same():
    pool = libero_envs.EnvPool(2)
    try:
        init_state = libero_envs.get_init_states("libero_goal", 8)[3]
        first, second = pool.reset([0, 1], spec(), init_state, task_label="put_the_bowl_on_the_plate")
        np.testing.assert_array_equal(first["image"], second["image"])
        np.testing.assert_array_equal(first["state"]["eef_pos"], second["state"]["eef_pos"])
        for name, entry in first["state"]["objects"].items():
            np.testing.assert_array_equal(entry["pos"], second["state"]["objects"][name]["pos"])
        # ... and a different init state looks different.
        other = pool.reset([0], spec(), libero_envs.get_init_states("libero_goal", 8)[4])[0]
        assert np.abs(other["image"].astype(int) - first["image"]).max() > 0
    finally:
        pool.close()


def fixture_positions(state: dict) -> dict:
    return {name: entry["pos"] for name, entry in state["objects"].items() if entry["kind"] == "fixture"}


def test_episode_k_gets_the_fixture_placement_of_upstreams_loop():
    # Upstream's evaluation loop, through LIBERO's own API: one env per task (hard resets, its default), seeded
    # once with 0, a reset before every episode, then the episode's steps.
    task, init_states = libero_envs.get_task("libero_goal", 8), libero_envs.get_init_states("libero_goal", 8)
    upstream = OffScreenRenderEnv(bddl_file_name=bddl("libero_goal", 8), camera_heights=128, camera_widths=128)
    upstream.seed(0)
    expected = []
    for k in range(3):
        upstream.reset()
        obs = upstream.set_init_state(init_states[k])
        for _ in range(5):
            obs, _, _, _ = upstream.step(np.zeros(7))
        expected.append(fixture_positions(rewards.build_reward_state(upstream, obs, 0, False)))
    upstream.close()
    assert max(np.abs(expected[0][name] - expected[1][name]).max() for name in expected[0]) > 1e-3

    # Ours, as evaluate.py resets its workers: episodes out of order, on workers that ran other episodes
    # before, and episode 1 again on the other worker.
    pool = libero_envs.EnvPool(2)
    try:
        for ids, episodes in (([0, 1], [2, 0]), ([1, 0], [1, 2]), ([0], [1])):
            results = pool.reset(ids, spec(), [init_states[k] for k in episodes], episodes, task_label=task.name)
            for k, result in zip(episodes, results):
                ours = fixture_positions(result["state"])
                assert ours.keys() == expected[k].keys()
                for name in ours:
                    np.testing.assert_allclose(ours[name], expected[k][name], atol=1e-9, err_msg=f"episode {k} {name}")
    finally:
        pool.close()


def test_a_hung_worker_times_out_and_is_replaced(capfd):
    pool = libero_envs.EnvPool(2, step_timeout=5.0)
    try:
        init_state = libero_envs.get_init_states("libero_goal", 8)[0]
        pool.reset([0, 1], spec(), init_state, task_label="put_the_bowl_on_the_plate")
        hung_pid = pool.workers[0].pid
        os.kill(hung_pid, signal.SIGSTOP)
        results = pool.step([0, 1], np.zeros((2, 7)))
        assert results[0] is None and results[1] is not None
        assert "no reply within 5 s" in capfd.readouterr().err
        assert pool.workers[0].pid != hung_pid and pool.restarts == 1
        assert all(r is not None for r in pool.reset([0, 1], spec(), init_state))
        # A reset that hangs names its own knob.
        pool.reset_timeout = 3.0
        os.kill(pool.workers[1].pid, signal.SIGSTOP)
        assert pool.reset([1], spec(), init_state) == [None]
        assert "no reply within 3 s (hung worker; raise --reset-timeout if slow)" in capfd.readouterr().err
        assert pool.restarts == 2
    finally:
        pool.close()


def test_a_reused_env_replays_exactly_like_a_fresh_one():
    # Soft resets keep the gripper's integrated command and the solver warm start, and every reset re-samples
    # the fixture placements (not part of LIBERO's init states), unless reset_env takes care of all three.
    init_state = libero_envs.get_init_states("libero_goal", 8)[0]
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 7))

    def replay(env):
        libero_envs.reset_env(env, init_state)
        for action in actions:
            env.step(action)
        return np.concatenate([env.get_sim_state(), env.sim.model.body_pos.ravel()])

    used = libero_envs.make_env(bddl("libero_goal", 8), render=False, horizon=200)
    replay(used)
    for action in np.random.default_rng(1).uniform(-1, 1, size=(30, 7)):
        used.step(action)
    fresh = libero_envs.make_env(bddl("libero_goal", 8), render=False, horizon=200)
    np.testing.assert_array_equal(replay(used), replay(fresh))


def test_a_reset_that_skips_the_hidden_renders_sees_what_a_fully_rendered_one_sees():
    # reset_env renders only the last wait step's frame; the reference renders every reset and wait step, as
    # OpenVLA's evaluation does. Same env kind and call sequence, twice in a row on one env (new placements).
    init_states = libero_envs.get_init_states("libero_goal", 8)

    def rendered_reset(env, init_state, placement, rng_states):
        libero_envs.seed_placement(env, placement, rng_states)
        env.reset()
        env.set_init_state(init_state)
        env.sim.data.qacc_warmstart[:] = 0
        for robot in env.robots:
            robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)
        for _ in range(libero_envs.NUM_WAIT_STEPS):
            obs, _, _, _ = env.step(libero_envs.WAIT_ACTION)
        return obs

    ours = libero_envs.make_env(bddl("libero_goal", 8), render=True, camera_size=128, horizon=100)
    reference = libero_envs.make_env(bddl("libero_goal", 8), render=True, camera_size=128, horizon=100)
    ours_rng, reference_rng = [], []
    for k in (2, 0):
        obs = libero_envs.reset_env(ours, init_states[k], k, ours_rng)
        expected = rendered_reset(reference, init_states[k], k, reference_rng)
        np.testing.assert_array_equal(obs["agentview_image"], expected["agentview_image"], err_msg=f"episode {k}")
        np.testing.assert_array_equal(ours.get_sim_state(), reference.get_sim_state())
        assert obs["agentview_image"].std() > 10  # a real frame, not a blank one
        for _ in range(2):  # and the camera renders every step after the reset
            step, _, _, _ = ours.step(np.ones(7) * 0.5)
            expected_step, _, _, _ = reference.step(np.ones(7) * 0.5)
            np.testing.assert_array_equal(step["agentview_image"], expected_step["agentview_image"])
        assert np.abs(step["agentview_image"].astype(int) - obs["agentview_image"]).max() > 0
    ours.close()
    reference.close()
