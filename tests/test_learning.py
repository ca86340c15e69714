"""Did it learn? A short TGRPO run with the tiny VLA on real LIBERO, rewarded for raising the end effector: the
mean return of the group must rise clearly. The same run as benchmarks/learning_signal.py's table, shorter."""

import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tgrpo

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import learning_signal  # noqa: E402

ITERATIONS, BLOCK = 8, 3


def test_tgrpo_raises_the_return_of_the_tiny_vla(tiny_cache, tmp_path):
    # LoRA lr 0.1, far above the paper's 1e-5 for the 7B: the tiny VLA starts from random weights.
    args = learning_signal.training_args(ITERATIONS, learning_rate=0.1, output_dir=str(tmp_path))
    run_dir = tgrpo.main(args)["run_dir"]
    returns = [event.value for event in EventAccumulator(str(run_dir)).Reload().Scalars("charts/return_mean")]
    assert len(returns) == ITERATIONS
    first, last = sum(returns[:BLOCK]) / BLOCK, sum(returns[-BLOCK:]) / BLOCK
    # The return is the rise in metres summed over 8 steps: ~0 for the untrained policy's random tokens, about
    # 0.2 when every step moves up at full speed.
    assert last > first + 0.05, returns
