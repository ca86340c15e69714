"""Safe to run for a day: interruptions at several points resume bit for bit, checkpoints survive a kill
between their renames and a full disk, and every bad input is one line naming the flag, before any work."""

import io
import json
import os
import resource
import runpy
import shutil
import signal
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import libero_envs
import tgrpo

ROOT = Path(__file__).resolve().parent.parent
RAISE_EEF = "def compute_reward(state, info):\n    return float(state['eef_pos'][2] - info['initial']['eef_pos'][2])\n"
# One small run: 2 envs, 3 steps, a periodic greedy evaluation after every iteration.
RUN_FLAGS = dict(
    seed=3,
    suite="libero_goal",
    task_ids=(8,),
    model="tiny",
    device="cpu",
    num_envs=2,
    max_steps=3,
    camera_size=128,
    learning_rate=1e-3,
    micro_batch_size=4,
    save_every=0,
    video_every=0,
    eval_every=1,
    eval_trials_per_task=1,
    eval_max_steps=20,
)


def cli_flags(reward_file, output_dir, exp_name, num_iterations) -> list:
    flags = {
        **RUN_FLAGS,
        "reward_file": reward_file,
        "output_dir": output_dir,
        "exp_name": exp_name,
        "num_iterations": num_iterations,
    }
    argv = []
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", *(map(str, value) if isinstance(value, tuple) else [str(value)])]
    return argv


def adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "checkpoint" / "adapter" / "adapter_model.safetensors"))


def assert_same_adapter(run_dir: Path, reference: Path) -> None:
    final, expected = adapter(run_dir), adapter(reference)
    assert final.keys() == expected.keys()
    for name in final:
        assert torch.equal(final[name], expected[name]), name


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("reward") / "raise_eef.py"
    path.write_text(RAISE_EEF)
    return path


@pytest.fixture(scope="module")
def uninterrupted(tiny_cache, reward_file, tmp_path_factory):
    """Two iterations in one go: the reference every interrupted-and-resumed run must match bit for bit."""
    output_dir = tmp_path_factory.mktemp("straight")
    args = tgrpo.Args(**RUN_FLAGS, reward_file=str(reward_file), output_dir=str(output_dir), num_iterations=2)
    return tgrpo.main(args)["run_dir"]


def default_ctrl_c() -> None:
    # A shell runs background jobs with Ctrl-C ignored, and a child inherits that: Python then installs no
    # KeyboardInterrupt handler. A user's terminal does not ignore it, so neither does this test's child.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_after(line_start: str, argv: list) -> tuple:
    """Run tgrpo.py and send SIGINT (Ctrl-C) as soon as a stdout line starts with `line_start`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "tgrpo.py", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_ctrl_c,
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.lstrip().startswith(line_start):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=300)
    return process.returncode, "".join(lines) + out, err


@pytest.mark.parametrize(
    "when,line_start",
    [("during the periodic evaluation", "iter    1"), ("while collecting iteration 2", "[tgrpo] eval at iteration 1")],
)
def test_ctrl_c_saves_exits_130_and_the_resumed_run_is_bit_identical(
    when, line_start, uninterrupted, reward_file, tmp_path
):
    code, out, err = interrupt_after(line_start, cli_flags(reward_file, tmp_path, "interrupted", 2))
    assert code == 130, (when, out[-2000:], err[-2000:])
    assert "interrupted; saving the" in out
    run_dir = next(tmp_path.glob("libero_goal__interrupted__*"))
    saved = json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())
    # The checkpoint counts exactly the iterations whose optimizer step was applied (1, or 2 if the signal
    # arrived after iteration 2's update had begun: Ctrl-C lets an update finish).
    assert saved["iteration"] in (1, 2), saved["iteration"]

    resumed = subprocess.run(
        [sys.executable, "tgrpo.py", "--resume", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_dir} at iteration {saved['iteration'] + 1}" in resumed.stdout
    assert_same_adapter(run_dir, uninterrupted)


def test_a_failing_reward_stops_the_run_with_one_line_after_a_checkpoint(tiny_cache, tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def compute_reward(state, info):\n    return 1.0 / (state['step'] - 2)\n")
    flags = {**RUN_FLAGS, "eval_every": 0}
    result = tgrpo.main(tgrpo.Args(**flags, reward_file=str(broken), output_dir=str(tmp_path), num_iterations=3))
    assert result["exit_code"] == 1 and result["iteration"] == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[tgrpo] stopped")]
    assert len(lines) == 1
    assert f"{broken} raised ZeroDivisionError" in lines[0] and "at step 2 (env 0)" in lines[0], lines[0]
    state = json.loads((result["run_dir"] / "checkpoint" / "trainer_state.json").read_text())
    assert state["iteration"] == 0


def fake_checkpoint(directory: Path, iteration, complete=True) -> None:
    (directory / "adapter").mkdir(parents=True)
    if complete:
        (directory / "trainer_state.json").write_text(json.dumps({"iteration": iteration}))


@pytest.mark.parametrize(
    "left_behind,expected_iteration",
    [
        # killed while writing the new one: the old checkpoint is whole, the new one has no trainer_state.json
        ({"checkpoint": 5, "checkpoint.tmp": None}, 5),
        # killed between the two renames: the old one moved aside, the new one complete but not renamed
        ({"checkpoint.old": 5, "checkpoint.tmp": 6}, 6),
        # killed after the swap, before the old one was deleted
        ({"checkpoint": 6, "checkpoint.old": 5}, 6),
        # killed between the renames while the new one was incomplete
        ({"checkpoint.old": 5, "checkpoint.tmp": None}, 5),
    ],
)
def test_resume_finds_the_newest_complete_checkpoint_whatever_name_a_kill_left(
    tmp_path, left_behind, expected_iteration
):
    for name, iteration in left_behind.items():
        fake_checkpoint(tmp_path / name, iteration, complete=iteration is not None)
    found = tgrpo.find_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoint"
    assert json.loads((found / "trainer_state.json").read_text())["iteration"] == expected_iteration
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_so(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted / "checkpoint", run_dir / "checkpoint")
    before = adapter(run_dir)
    args = tgrpo.Args(**RUN_FLAGS, reward_file="unused.py", resume=str(run_dir))
    policy, optimizer = tgrpo.load_trainable_policy(args, run_dir / "checkpoint", args.device)
    state = {"iteration": 4, "args": {}, "reward_sha256": {}}
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))  # files stop growing at 4 KB, as on a full disk
    try:
        with pytest.raises(libero_envs.UsageError) as error:
            tgrpo.save_checkpoint(run_dir, policy.model, optimizer, state, tgrpo.rng_state())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    message = str(error.value)
    assert "could not write the checkpoint of iteration 4" in message and "--resume" in message
    assert f"the last good checkpoint is kept at {run_dir / 'checkpoint'}" in message and "\n" not in message
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint"]
    assert json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 2
    for name, tensor in adapter(run_dir).items():
        assert torch.equal(tensor, before[name])


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line naming the flag, before any model or env loads


def run_script(script: str, *argv: str) -> tuple:
    """Run a script's command line in this process, as `python <script> <argv>`: (exit code, stderr)."""
    stderr = io.StringIO()
    saved_argv = sys.argv
    sys.argv = [script, *argv]
    try:
        with redirect_stderr(stderr), redirect_stdout(io.StringIO()):
            runpy.run_path(str(ROOT / script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = saved_argv
    if isinstance(code, str):  # sys.exit("error: ...") prints its text on stderr
        stderr.write(code + "\n")
        code = 1
    return code, stderr.getvalue()


BAD_INPUTS = [
    ("tgrpo.py", ["--temperature", "-1"], "--temperature -1.0: sampling needs a temperature > 0"),
    ("tgrpo.py", ["--alpha-step", "-0.3"], "--alpha-step -0.3: the advantage weights must be >= 0"),
    ("tgrpo.py", ["--alpha-traj", "-0.7"], "--alpha-traj -0.7: the advantage weights must be >= 0"),
    ("tgrpo.py", ["--alpha-step", "0", "--alpha-traj", "0"], "--alpha-step 0.0: with --alpha-traj 0 every advantage"),
    ("tgrpo.py", ["--step-timeout", "0"], "--step-timeout 0.0"),
    ("tgrpo.py", ["--max-steps", "0"], "--max-steps 0"),
    ("tgrpo.py", ["--micro-batch-size", "0"], "--micro-batch-size 0"),
    ("tgrpo.py", ["--lora-rank", "0"], "--lora-rank 0"),
    ("tgrpo.py", ["--num-envs", "1"], "--num-envs 1: a group comparison needs at least 2"),
    ("tgrpo.py", ["--task-ids", "12"], "--task-ids 12: libero_goal has tasks 0..9"),
    ("tgrpo.py", ["--model", "{bad_model}"], "config.json is not valid JSON"),
    ("tgrpo.py", ["--model", "tiny", "--output-dir", "{a_file}"], "--output-dir {a_file}: cannot write"),
    ("tgrpo.py", ["--resume", "{empty_dir}"], "no complete checkpoint there"),
    ("tgrpo.py", ["--resume", "{damaged_run}"], "rng.pt is damaged"),
    ("rollout.py", ["--temperature", "-1"], "--temperature -1.0"),
    ("rollout.py", ["--step-timeout", "0"], "--step-timeout 0.0"),
    ("rollout.py", ["--init-state-id", "50"], "--init-state-id 50: LIBERO tasks have init states 0..49"),
    ("rollout.py", ["--reward-file", "/nonexistent.py", "--model", "tiny"], "no reward file at /nonexistent.py"),
    ("evaluate.py", ["--step-timeout", "0"], "--step-timeout 0.0"),
    ("evaluate.py", ["--trials-per-task", "0"], "--trials-per-task 0"),
    ("gen_reward.py", ["--task-ids", "10"], "--task-ids 10: libero_goal has tasks 0..9"),
    ("gen_reward.py", ["--max-attempts", "0"], "--max-attempts must be at least 1"),
    ("gen_reward.py", ["--task-ids", "1"], "pass --llm <model name>"),
]
if not torch.cuda.is_available():
    BAD_INPUTS += [
        (script, ["--device", "cuda"], "--device cuda: no CUDA GPU") for script in ("tgrpo.py", "evaluate.py")
    ]


@pytest.mark.parametrize("script,argv,message", BAD_INPUTS, ids=[f"{s}:{' '.join(a)}" for s, a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_without_traceback(script, argv, message, tmp_path, tiny_cache, uninterrupted):
    places = {
        "a_file": tmp_path / "a_file",
        "empty_dir": tmp_path / "empty",
        "bad_model": tmp_path / "bad_model",
        "damaged_run": tmp_path / "damaged",
    }
    places["a_file"].write_text("not a directory")
    places["empty_dir"].mkdir()
    places["bad_model"].mkdir()
    (places["bad_model"] / "config.json").write_text("{not json")
    shutil.copytree(uninterrupted / "checkpoint", places["damaged_run"] / "checkpoint")
    (places["damaged_run"] / "checkpoint" / "rng.pt").write_bytes(b"truncat")
    argv = [a.format(**places) for a in argv]
    code, stderr = run_script(script, *argv)
    lines = stderr.strip().splitlines()
    assert code not in (0, None), stderr
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message.format(**places) in lines[0], lines[0]


def test_groups_that_the_ranks_cannot_share_equally_are_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun --nproc-per-node 2 sets
    code, stderr = run_script("tgrpo.py", "--groups-per-iteration", "3", "--model", "tiny")
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip() == (
        "error: --groups-per-iteration 3: the 2 torchrun ranks collect equal shares: use a multiple of 2"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPUs")
@pytest.mark.parametrize("script", ["tgrpo.py", "evaluate.py"])
def test_nccl_without_gpus_is_one_line(script, monkeypatch, tiny_cache):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; the check comes before the ranks meet
    code, stderr = run_script(script, "--model", "tiny", "--dist-backend", "nccl")
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip() == (
        "error: --dist-backend nccl: no CUDA GPU is visible, and nccl runs on GPUs only; use --dist-backend gloo "
        "(or auto)"
    )


def test_a_resume_on_another_number_of_ranks_says_how_to_resume(uninterrupted, tmp_path):
    run_dir = tmp_path / "ran_on_two"
    shutil.copytree(uninterrupted / "checkpoint", run_dir / "checkpoint")
    state_file = run_dir / "checkpoint" / "trainer_state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "world_size": 2}))
    code, stderr = run_script("tgrpo.py", "--resume", str(run_dir))
    assert code == 1 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "was trained on 2 rank(s), and this is 1" in stderr
    assert f"torchrun --nproc-per-node 2 tgrpo.py --resume {run_dir}" in stderr


def test_a_bad_suite_is_rejected_by_the_parser_with_the_choices():
    code, stderr = run_script("tgrpo.py", "--suite", "libero_long")
    assert code == 2 and "libero_long" in stderr and "libero_spatial" in stderr and "libero_10" in stderr
