"""Data parallel on CPU with gloo: 2 torchrun ranks with one group each train the adapter one process with
--groups-per-iteration 2 trains, resume as they ran, and split an evaluation into the JSON one process writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tyro
from safetensors.torch import load_file

import evaluate
import tgrpo

ROOT = Path(__file__).resolve().parent.parent
RAISE_EEF = "def compute_reward(state, info):\n    return float(state['eef_pos'][2] - info['initial']['eef_pos'][2])\n"
LEARNING_RATE = 1e-3
TRAIN_FLAGS = (
    f"--suite libero_goal --task-ids 8 9 --model tiny --device cpu --num-envs 2 --max-steps 4 --camera-size 128 "
    f"--learning-rate {LEARNING_RATE} --save-every 0 --video-every 0 --seed 3"
).split()
EVAL_FLAGS = (
    "--suite libero_goal --task-ids 3 8 --model tiny --device cpu --trials-per-task 1 --num-envs 1 --max-steps 5 "
    "--camera-size 128"
).split()


def start(argv: list, ranks: int) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node <ranks> <argv>`, started."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.Popen(
        [sys.executable, *launcher, *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen) -> str:
    """Its stdout, once it exited with 0."""
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, out[-2000:] + err[-3000:]
    return out


def run_here(module, argv: list):
    """`python <module>.py <argv>` in this process (while torchrun runs beside it: CI has two cores)."""
    return module.main(tyro.cli(module.Args, args=argv))


def adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "checkpoint" / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("reward") / "raise_eef.py"
    path.write_text(RAISE_EEF)
    return str(path)


def test_two_ranks_train_like_one_process_with_two_groups_and_resume(tiny_cache, reward_file, tmp_path, capsys):
    common = [*TRAIN_FLAGS, "--reward-file", reward_file, "--num-iterations", "1", "--output-dir", str(tmp_path)]
    ranks = start(["tgrpo.py", *common, "--exp-name", "two"], ranks=2)  # default G: one group per rank
    one = run_here(tgrpo, [*common, "--groups-per-iteration", "2", "--exp-name", "one"])["run_dir"]
    assert "task/init 8/0, 9/0" in capsys.readouterr().out
    ranks_out = finish(ranks)
    two = next(tmp_path.glob("*__two__*"))
    # Both ran the iteration's two groups (task 8 and task 9, init state 0) and said so once, from rank 0.
    assert ranks_out.count("task/init 8/0, 9/0") == 1, ranks_out
    assert "the same on all 2 ranks" in ranks_out  # rank 0 compared the ranks' adapters before saving
    state = json.loads((two / "checkpoint" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["args"]["groups_per_iteration"] == 2

    # The same update within float rounding of the summation order, far below the step itself (~lr per weight).
    single, split = adapter(one), adapter(two)
    for name in single:
        np.testing.assert_allclose(split[name].numpy(), single[name].numpy(), rtol=0, atol=LEARNING_RATE / 100)

    # Resumed on 2 ranks, with a periodic evaluation whose two tasks the ranks split and gather.
    evaluation = ["--eval-every", "1", "--eval-trials-per-task", "1", "--eval-max-steps", "5"]
    resumed = finish(start(["tgrpo.py", "--resume", str(two), "--num-iterations", "2", *evaluation], ranks=2))
    assert f"resuming {two} at iteration 2" in resumed and "task/init 8/1, 9/1" in resumed
    assert resumed.count("[tgrpo] eval at iteration 2: 0.0% over 2 tasks") == 1, resumed
    assert json.loads((two / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 2


def comparable(results_file: Path) -> dict:
    """A results.json without what depends on the clock or the output folder."""
    report = json.loads(results_file.read_text())
    report["config"].pop("output_dir")
    for summary in report["suites"].values():
        summary.pop("wall_time"), summary.pop("episodes_per_hour")
    for episode in report["episodes"]:
        episode.pop("wall_time")
    return report


def test_a_distributed_evaluation_writes_the_json_of_one_process(tiny_cache, tmp_path, capsys):
    ranks = start(["evaluate.py", *EVAL_FLAGS, "--output-dir", str(tmp_path / "two")], ranks=2)
    run_here(evaluate, [*EVAL_FLAGS, "--output-dir", str(tmp_path / "one")])
    alone, split = capsys.readouterr().out, finish(ranks)
    single = comparable(next((tmp_path / "one").glob("*/results.json")))
    distributed = comparable(next((tmp_path / "two").glob("*/results.json")))
    assert [(e["task_id"], e["init_state_id"]) for e in distributed["episodes"]] == [(3, 0), (8, 0)]
    assert distributed == single
    table = [line for line in alone.splitlines() if line.startswith("|")]
    assert table and table == [line for line in split.splitlines() if line.startswith("|")]
    assert split.count("wrote ") == 1  # only rank 0 writes
