"""Did it learn? A short TGRPO run with the tiny VLA on real LIBERO, rewarded for raising the end effector: the
mean return of the group must rise clearly. The longer version with its table: benchmarks/learning_signal.py."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tgrpo

from conftest import ROOT

ITERATIONS, BLOCK = 10, 3


def test_tgrpo_raises_the_return_of_the_tiny_vla(tiny_cache, tmp_path):
    args = tgrpo.Args(
        exp_name="learning",
        seed=1,
        model="tiny",
        device="cpu",
        suite="libero_goal",
        task_ids=(8,),
        reward_file=str(ROOT / "tests" / "data" / "raise_eef.py"),
        num_envs=4,
        max_steps=8,
        camera_size=128,
        learning_rate=1e-1,  # far above the paper's 1e-5 for the 7B: the tiny VLA starts random
        num_iterations=ITERATIONS,
        save_every=0,
        video_every=0,
        output_dir=str(tmp_path),
    )
    run_dir = tgrpo.main(args)["run_dir"]
    returns = [event.value for event in EventAccumulator(str(run_dir)).Reload().Scalars("charts/return_mean")]
    assert len(returns) == ITERATIONS
    first, last = sum(returns[:BLOCK]) / BLOCK, sum(returns[-BLOCK:]) / BLOCK
    # The return is the rise in metres summed over 8 steps: ~0 for the untrained policy's random tokens, about
    # 0.2 when every step moves up at full speed.
    assert last > first + 0.05, returns
