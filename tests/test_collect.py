"""collect_group on the real simulator with the tiny VLA, worker crashes, and the rollout.py CLI."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

import libero_envs
import openvla_policy
import rewards
import rollout

from conftest import ROOT

SUITE, TASK_ID = "libero_goal", 8


@pytest.fixture(scope="module")
def pool():
    pool = libero_envs.EnvPool(2, openvla_policy.preprocess_image, step_timeout=60.0)
    yield pool
    pool.close()


def reward_file(tmp_path_factory, name: str, body: str) -> rollout.RewardFile:
    path = tmp_path_factory.mktemp("rewards") / name
    path.write_text(f"def compute_reward(state, info):\n    {body}\n")
    return rollout.read_reward_file(SUITE, "put_the_bowl_on_the_plate", str(path))


@pytest.fixture(scope="module")
def eef_height(tmp_path_factory):
    return reward_file(tmp_path_factory, "eef_height.py", 'return float(state["eef_pos"][2])')


def collect(policy, pool, reward, max_steps, **options):
    return rollout.collect_group(
        policy,
        pool,
        suite=SUITE,
        task_id=TASK_ID,
        init_state_id=0,
        reward_file=reward,
        max_steps=max_steps,
        camera_size=128,
        **options,
    )


def test_group_has_every_field_the_trainer_needs(tiny_policy, pool, eef_height):
    torch.manual_seed(0)
    group = collect(tiny_policy, pool, eef_height, max_steps=6)
    n, t = 2, 6
    assert group.images.shape == (n, t, 224, 224, 3) and group.images.dtype == np.uint8
    assert group.tokens.shape == (n, t, 7) and group.log_probs.shape == (n, t)
    assert group.rewards.shape == (n, t) and group.mask.all() and list(group.lengths) == [6, 6]
    assert not group.success.any() and not group.failed.any()
    assert ((group.tokens >= openvla_policy.ACTION_TOKEN_BEGIN) & (group.tokens < openvla_policy.VOCAB_SIZE)).all()
    # The reward is the real eef height after each step: near the start height and changing as the arm moves.
    assert np.all((group.rewards > 0.8) & (group.rewards < 1.6)) and np.ptp(group.rewards) > 0
    assert set(group.timing) == {"simulation", "policy", "other", "total"}
    assert group.timing["total"] >= group.timing["simulation"] > 0
    # The stored log-probs are the ones the trainer will recompute from the stored images.
    rescored = tiny_policy.log_prob(group.images[:, 2], group.instruction, group.tokens[:, 2]).detach().numpy()
    np.testing.assert_allclose(rescored, group.log_probs[:, 2], atol=1e-4)


def test_termination_modes():
    live, success = np.array([True, True, False, True]), np.array([False, True, False, False])
    assert list(rollout.still_running(live, success, "first-success")) == [False] * 4
    assert list(rollout.still_running(live, success, "independent")) == [True, False, False, True]
    nobody = np.zeros(4, bool)
    assert list(rollout.still_running(live, nobody, "first-success")) == list(live)


def test_a_real_success_ends_the_trajectory_in_both_modes(tiny_policy, pool, bowl_on_plate, eef_height):
    # The bowl is put on the plate before the rollout, so LIBERO's own `done` holds after the first step.
    for termination in ("first-success", "independent"):
        group = collect(tiny_policy, pool, eef_height, 5, termination=termination, init_state=bowl_on_plate)
        assert group.success.all() and list(group.lengths) == [1, 1] and group.mask.shape == (2, 1)


class PolicyThatKillsEnv1(openvla_policy.VLAPolicy):
    """The real policy; at its 4th call it first kills env 1's worker, as a simulator crash would."""

    def __init__(self, policy, pool):
        super().__init__(policy.model, policy.processor, policy.action_stats, policy.device)
        self.pool, self.calls, self.killed_pid = pool, 0, None

    def act(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 4:
            self.killed_pid = self.pool.workers[1].pid
            os.kill(self.killed_pid, signal.SIGKILL)
        return super().act(*args, **kwargs)


def test_a_worker_killed_mid_rollout_is_reported_and_replaced(tiny_policy, pool, eef_height, capfd):
    killer = PolicyThatKillsEnv1(tiny_policy, pool)
    group = collect(killer, pool, eef_height, max_steps=6)
    assert list(group.failed) == [False, True]
    assert list(group.lengths) == [6, 3] and list(group.mask.sum(1)) == [6, 3]
    err = capfd.readouterr().err
    assert "env 1 failed on task 'put_the_bowl_on_the_plate'" in err and "worker process died" in err
    assert pool.workers[1].pid != killer.killed_pid and pool.workers[1].is_alive()
    # The replacement works: the next group completes on both envs.
    group = collect(tiny_policy, pool, eef_height, 2)
    assert not group.failed.any() and list(group.lengths) == [2, 2]


def test_a_broken_reward_stops_the_collection_naming_file_step_and_env(tiny_policy, pool, tmp_path_factory):
    broken = reward_file(tmp_path_factory, "broken.py", 'return state["objects"]["no_such_object"]')
    with pytest.raises(rewards.RewardFileError, match=r"broken.py.*KeyError.*step 1.*\(env 0\)"):
        collect(tiny_policy, pool, broken, 3)


def test_a_reward_that_crashes_its_process_stops_the_collection_not_a_worker(tiny_policy, pool, tmp_path):
    # A C-stack overflow once compute_reward has returned (the chain is freed with the call's copy of the state):
    # the reward process dies, and that is the file's fault, whatever it was doing then; no worker is restarted.
    path = ROOT / "tests" / "data" / "deep_slice_chain.py"
    crashing = rollout.read_reward_file(SUITE, "put_the_bowl_on_the_plate", str(path))
    restarts, pids = pool.restarts, [worker.pid for worker in pool.workers]
    with pytest.raises(rewards.RewardFileError) as error:
        collect(tiny_policy, pool, crashing, 3)
    message = str(error.value)
    assert message.startswith(f"{path} crashed its reward process (SIGSEGV)") and "at step 1 (env 0)" in message
    assert pool.restarts == restarts and [worker.pid for worker in pool.workers] == pids


class PolicyThatSendsSigterm(openvla_policy.VLAPolicy):
    """The real policy; at its 2nd call it first sends SIGTERM to every worker and reward process of the pool,
    as a scheduler that signals the whole process group would."""

    def __init__(self, policy, pool):
        super().__init__(policy.model, policy.processor, policy.action_stats, policy.device)
        self.pool, self.calls, self.signalled = pool, 0, []

    def act(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            self.signalled = [w.pid for w in self.pool.workers] + [p.pid for p in self.pool.reward_processes]
            for pid in self.signalled:
                os.kill(pid, signal.SIGTERM)
        return super().act(*args, **kwargs)


def test_workers_and_reward_processes_leave_sigterm_to_the_main_process(tiny_policy, pool, eef_height):
    signaller = PolicyThatSendsSigterm(tiny_policy, pool)
    group = collect(signaller, pool, eef_height, 3)
    assert not group.failed.any() and list(group.lengths) == [3, 3] and len(signaller.signalled) == 4
    assert [w.pid for w in pool.workers] + [p.pid for p in pool.reward_processes] == signaller.signalled


def test_an_env_that_fails_again_and_again_on_a_task_stops_the_run_with_one_line(tmp_path, capfd):
    log = tmp_path / "workers.log"
    serial = libero_envs.EnvPool(1, parallel=False, max_failures=2, log_path=str(log))  # no worker to start
    broken = libero_envs.EnvSpec("/nonexistent/broken.bddl", horizon=30)
    try:
        assert serial.reset([0], broken, np.zeros(10), task_label="first") == [None]
        assert serial.reset([0], broken, np.zeros(10), task_label="second") == [None]  # another task: 1 in a row
        with pytest.raises(libero_envs.WorkerKeepsFailing) as stop:
            serial.reset([0], broken, np.zeros(10), task_label="second")
    finally:
        serial.close()
    why = "AssertionError: [error] /nonexistent/broken.bddl does not exist!"
    assert str(stop.value) == (
        f"env 0 failed 2 times in a row on task 'second' (the last time: {why} (traceback in {log})); a fresh "
        "worker does not help, so the run stops: look at the task's files and the simulator"
    )
    assert isinstance(stop.value, libero_envs.UsageError)  # the scripts print it as one line and stop
    err = capfd.readouterr().err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("[libero_envs] warning: env 0 failed")]
    assert len(warnings) == 3 and all(f"{why} (traceback in {log})" in line for line in warnings), err
    assert log.read_text().count("Traceback (most recent call last)") == 3


def test_cli_end_to_end_writes_the_group_and_videos(tiny_cache, tmp_path):
    command = [sys.executable, "rollout.py", "--suite", SUITE, "--task-ids", str(TASK_ID), "--num-envs", "2"]
    command += ["--max-steps", "4", "--model", "tiny", "--video", "all", "--camera-size", "128"]
    command += ["--output-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    data = np.load(run_dir / "group.npz")
    assert data["tokens"].shape == (2, 4, 7) and data["mask"].all()
    videos = sorted(p.name for p in run_dir.glob("*.mp4"))
    assert videos == ["env0.mp4", "env1.mp4"] and all((run_dir / v).stat().st_size > 1000 for v in videos)
    assert "env 0:" in result.stdout and "steps/s" in result.stdout and "put the bowl on the plate" in result.stdout
