"""Safe to run for a day: interruptions (Ctrl-C, twice; SIGTERM to the process group) resume bit for bit,
checkpoints survive a kill between their renames, a damaged file and a full disk, and every bad input is one
line naming the flag, before any work."""

import hashlib
import io
import json
import os
import re
import resource
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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


def signal_after(argv: list, steps: list) -> tuple:
    """Run tgrpo.py in a process group of its own, as a terminal or a scheduler starts it, and at each
    (line start, signal) of `steps`, as soon as a stdout line starts with it, send the signal to the whole group
    (env workers included: a terminal's Ctrl-C and Slurm's or Kubernetes' SIGTERM reach them all)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "tgrpo.py", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_ctrl_c,
        start_new_session=True,
    )
    lines, pending = [], list(steps)
    for line in process.stdout:
        lines.append(line)
        if line.lstrip().startswith(pending[0][0]):
            os.killpg(process.pid, pending.pop(0)[1])
            if not pending:
                break
    out, err = process.communicate(timeout=300)
    return process.returncode, "".join(lines) + out, err


def resume_to_the_end(run_dir: Path, iteration: int, uninterrupted: Path) -> str:
    """Resume the run to its last iteration in a fresh process; it must end with the uninterrupted run's adapter,
    bit for bit, and print nothing but its own lines (no warning a user cannot act on). Returns its stdout."""
    resumed = subprocess.run(
        [sys.executable, "tgrpo.py", "--resume", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run_dir} at iteration {iteration + 1}" in resumed.stdout
    # Piped: no progress bar, no library warnings; only the project's own lines (none is expected here).
    for line in resumed.stderr.splitlines():
        assert line.startswith("[") and "Traceback" not in line, resumed.stderr[-3000:]
    for line in resumed.stdout.splitlines():
        assert line.startswith(("iter ", "[tgrpo] ")), line
    assert_same_adapter(run_dir, uninterrupted)
    return resumed.stdout


def test_sigterm_to_the_process_group_saves_exits_130_and_the_resumed_run_is_bit_identical(
    uninterrupted, reward_file, tmp_path
):
    # While collecting iteration 2 (most likely while its envs reset): the workers ignore SIGTERM and carry on,
    # the trainer ends the collection, saves and exits as for Ctrl-C.
    argv = cli_flags(reward_file, tmp_path, "terminated", 2)
    code, out, err = signal_after(argv, [("[tgrpo] eval at iteration 1", signal.SIGTERM)])
    assert code == 130, (out[-2000:], err[-2000:])
    assert "interrupted; saving the 1 completed iterations" in out and "Traceback" not in err, err[-3000:]
    run_dir = next(tmp_path.glob("libero_goal__terminated__*"))
    # The checkpoint counts exactly the iterations whose optimizer step was applied.
    assert json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 1
    resume_to_the_end(run_dir, 1, uninterrupted)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the last tensor: the header still parses, the size is the same
    path.write_bytes(bytes(data))


def test_a_second_ctrl_c_during_the_exit_save_stops_at_once_and_a_damaged_newer_checkpoint_is_skipped(
    uninterrupted, reward_file, tmp_path
):
    # Ctrl-C during the periodic evaluation after iteration 1 (whose checkpoint --save-every 1 wrote), and again
    # as soon as the exit save begins.
    argv = [*cli_flags(reward_file, tmp_path, "twice", 2), "--save-every", "1"]
    steps = [("iter    1", signal.SIGINT), ("[tgrpo] interrupted; saving", signal.SIGINT)]
    code, out, err = signal_after(argv, steps)
    assert code == 130 and "Traceback" not in err, (out[-2000:], err[-3000:])
    run_dir = next(tmp_path.glob("libero_goal__twice__*"))
    assert out.count(f"[tgrpo] stopped at once; the last checkpoint written stays ({run_dir / 'checkpoint'})") == 1
    assert json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 1

    # A newer checkpoint (iteration 2) with a flipped byte in its adapter, as a kill between the swap and the
    # deletion leaves them: the older one must survive the resume and be the one resumed from.
    os.replace(run_dir / "checkpoint", run_dir / "checkpoint.old")
    shutil.copytree(uninterrupted / "checkpoint", run_dir / "checkpoint")
    flip_a_byte(run_dir / "checkpoint" / "adapter" / "adapter_model.safetensors")
    stdout = resume_to_the_end(run_dir, 1, uninterrupted)
    warnings = [line for line in stdout.splitlines() if line.startswith("[tgrpo] warning")]
    assert len(warnings) == 1 and "adapter_model.safetensors is damaged (its sha256 differs" in warnings[0], stdout
    assert "resuming from checkpoint.old, the newest complete checkpoint (iteration 1)" in warnings[0]
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]


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


def fake_checkpoint(directory: Path, iteration) -> None:
    """A checkpoint of `iteration` with one file recorded in its trainer_state.json: None leaves it without one (a
    save cut short), "damaged" gives its file other bytes than recorded, "garbage" makes the state file unreadable."""
    (directory / "adapter").mkdir(parents=True)
    weights = b"weights of iteration %d" % (iteration if isinstance(iteration, int) else 99)
    (directory / "adapter" / "weights.bin").write_bytes(weights)
    record = {"bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}
    state = {"iteration": iteration, "args": {}, "files": {"adapter/weights.bin": record}}
    if iteration == "damaged":
        state["iteration"] = 99
        (directory / "adapter" / "weights.bin").write_bytes(weights.upper())
    if iteration is not None:
        (directory / "trainer_state.json").write_text("{garbage" if iteration == "garbage" else json.dumps(state))


@pytest.mark.parametrize(
    "left_behind,expected_iteration,damaged",
    [
        # killed while writing the new one: the old checkpoint is whole, the new one has no trainer_state.json
        ({"checkpoint": 5, "checkpoint.tmp": None}, 5, None),
        # killed between the two renames: the old one moved aside, the new one complete but not renamed
        ({"checkpoint.old": 5, "checkpoint.tmp": 6}, 6, None),
        # killed after the swap, before the old one was deleted
        ({"checkpoint": 6, "checkpoint.old": 5}, 6, None),
        # killed between the renames while the new one was incomplete
        ({"checkpoint.old": 5, "checkpoint.tmp": None}, 5, None),
        # the newest one damaged on disk after the swap: the older one is resumed from, never deleted first
        ({"checkpoint": "damaged", "checkpoint.old": 5}, 5, "checkpoint/adapter/weights.bin is damaged"),
        ({"checkpoint.tmp": "damaged", "checkpoint.old": 5, "checkpoint": 4}, 5, "checkpoint.tmp/adapter/weights.bin"),
        ({"checkpoint": "garbage", "checkpoint.old": 5}, 5, "checkpoint/trainer_state.json is damaged"),
    ],
)
def test_resume_finds_the_newest_complete_checkpoint_whatever_name_a_kill_left(
    tmp_path, left_behind, expected_iteration, damaged, capsys
):
    for name, iteration in left_behind.items():
        fake_checkpoint(tmp_path / name, iteration)
    found = tgrpo.find_checkpoint(tmp_path)
    assert found == tmp_path / "checkpoint"
    assert json.loads((found / "trainer_state.json").read_text())["iteration"] == expected_iteration
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    lines = capsys.readouterr().out.splitlines()
    if damaged is None:
        assert lines == []
    else:  # one line names the damage and the fallback
        assert len(lines) == 1 and str(tmp_path / damaged) in lines[0], lines
        assert (
            f"resuming from checkpoint.old, the newest complete checkpoint (iteration {expected_iteration})" in lines[0]
        )


def test_a_flipped_byte_in_the_only_checkpoint_is_named_and_nothing_is_deleted(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted / "checkpoint", tmp_path / "checkpoint")
    fake_checkpoint(tmp_path / "checkpoint.tmp", None)
    adapter_file = tmp_path / "checkpoint" / "adapter" / "adapter_model.safetensors"
    flip_a_byte(adapter_file)
    with pytest.raises(libero_envs.UsageError) as error:
        tgrpo.find_checkpoint(tmp_path)
    assert f"{adapter_file} is damaged (its sha256 differs from the one recorded" in str(error.value)
    assert "no older complete checkpoint" in str(error.value) and "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.tmp"]


def save_on_a_full_disk(run_dir: Path, policy, optimizer, state: dict, file_size_limit: int) -> str:
    """The one-line error of a save whose files cannot grow past `file_size_limit` bytes, as on a full disk."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, limits[1]))
    try:
        with pytest.raises(libero_envs.UsageError) as error:
            tgrpo.save_checkpoint(run_dir, policy.model, optimizer, state, tgrpo.rng_state())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    return str(error.value)


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_so(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted / "checkpoint", run_dir / "checkpoint")
    before = adapter(run_dir)
    args = tgrpo.Args(**RUN_FLAGS, reward_file="unused.py", resume=str(run_dir))
    policy, optimizer, _ = tgrpo.load_trainable_policy(args, run_dir / "checkpoint", args.device)
    state = {"iteration": 4, "args": {}, "reward_sha256": {}}
    # Already full at a run's first checkpoint: the adapter's weights are the first large file (safetensors
    # reports it its own way), after peft's 5 KB model card.
    first = save_on_a_full_disk(tmp_path / "new_run", policy, optimizer, {**state, "iteration": 1}, 8192)
    assert "could not write the checkpoint of iteration 1" in first and "no earlier checkpoint exists" in first
    assert "SafetensorError" in first and "\n" not in first and not (tmp_path / "new_run" / "checkpoint.tmp").exists()
    message = save_on_a_full_disk(run_dir, policy, optimizer, state, 4096)
    assert "could not write the checkpoint of iteration 4" in message and "--resume" in message
    assert f"the last good checkpoint is kept at {run_dir / 'checkpoint'}" in message and "\n" not in message
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint"]
    assert json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())["iteration"] == 2
    for name, tensor in adapter(run_dir).items():
        assert torch.equal(tensor, before[name])


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line naming the flag, before any model or env loads


def run_script(script: str, *argv: str) -> tuple:
    """Run a script's command line in this process, as `python <script> <argv>`: (exit code, stderr, stdout)."""
    stderr, stdout = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2))  # as a file or a pipe
    saved_argv, saved_handlers = sys.argv, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    sys.argv = [script, *argv]
    try:
        with redirect_stderr(stderr), redirect_stdout(stdout):
            runpy.run_path(str(ROOT / script), run_name="__main__")
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = saved_argv
        for signum, handler in saved_handlers.items():
            signal.signal(signum, handler)
    if isinstance(code, str):  # sys.exit("error: ...") prints its text on stderr
        stderr.write(code + "\n")
        code = 1
    return code, *(stream.flush() or stream.buffer.getvalue().decode() for stream in (stderr, stdout))


BAD_INPUTS = [
    ("tgrpo.py", ["--temperature", "-1"], "--temperature -1.0: sampling needs a temperature > 0"),
    ("tgrpo.py", ["--alpha-step", "-0.3"], "--alpha-step -0.3: the advantage weights must be >= 0"),
    ("tgrpo.py", ["--alpha-traj", "-0.7"], "--alpha-traj -0.7: the advantage weights must be >= 0"),
    ("tgrpo.py", ["--alpha-step", "0", "--alpha-traj", "0"], "--alpha-step 0.0: with --alpha-traj 0 every advantage"),
    ("tgrpo.py", ["--step-timeout", "0"], "--step-timeout 0.0"),
    ("tgrpo.py", ["--reset-timeout", "0"], "--reset-timeout 0.0: use a positive number of seconds"),
    ("tgrpo.py", ["--max-steps", "0"], "--max-steps 0"),
    ("tgrpo.py", ["--micro-batch-size", "0"], "--micro-batch-size 0"),
    ("tgrpo.py", ["--lora-rank", "0"], "--lora-rank 0"),
    ("tgrpo.py", ["--num-envs", "1"], "--num-envs 1: a group comparison needs at least 2"),
    ("tgrpo.py", ["--task-ids", "12"], "--task-ids 12: libero_goal has tasks 0..9"),
    ("tgrpo.py", ["--task-ids", "0", "3", "0"], "--task-ids 0 3 0: task(s) 0 repeated; list each task once"),
    ("tgrpo.py", ["--model", "{bad_model}"], "config.json is not valid JSON"),
    ("tgrpo.py", ["--model", "tiny", "--output-dir", "{a_file}"], "--output-dir {a_file}: cannot write"),
    ("tgrpo.py", ["--model", "tiny", "--reward-file", "{binary_file}"], "cannot read the reward file {binary_file}"),
    ("tgrpo.py", ["--resume", "{empty_dir}"], "no complete checkpoint there"),
    ("tgrpo.py", ["--resume", "{damaged_run}"], "rng.pt is damaged"),
    ("tgrpo.py", ["--resume", "{empty_state_run}"], "trainer_state.json is damaged (missing or malformed: iteration"),
    ("tgrpo.py", ["--resume", "{garbage_state_run}"], "checkpoint/trainer_state.json is damaged (UnicodeDecodeError"),
    # The run used --num-envs 2; 4 is the default, given on purpose.
    ("tgrpo.py", ["--resume", "{run}", "--num-envs", "4"], "the run was trained with --num-envs 2, not 4"),
    ("rollout.py", ["--temperature", "-1"], "--temperature -1.0"),
    ("rollout.py", ["--step-timeout", "0"], "--step-timeout 0.0"),
    ("rollout.py", ["--reset-timeout", "-5"], "--reset-timeout -5.0: use a positive number of seconds"),
    ("rollout.py", ["--init-state-id", "50"], "--init-state-id 50: LIBERO tasks have init states 0..49"),
    ("rollout.py", ["--reward-file", "/nonexistent.py", "--model", "tiny"], "no reward file at /nonexistent.py"),
    ("evaluate.py", ["--step-timeout", "0"], "--step-timeout 0.0"),
    ("evaluate.py", ["--reset-timeout", "0"], "--reset-timeout 0.0: use a positive number of seconds"),
    ("evaluate.py", ["--trials-per-task", "0"], "--trials-per-task 0"),
    (
        "evaluate.py",
        ["--model", "tiny", "--lora", "{truncated_run}"],
        "adapter_model.safetensors is damaged (2000 bytes;",
    ),
    (
        "evaluate.py",
        ["--model", "tiny", "--lora", "{truncated_adapter}"],
        "adapter_model.safetensors is damaged (Safet",
    ),
    ("evaluate.py", ["--model", "tiny", "--lora", "{empty_config}"], "adapter_config.json is not a LoRA adapter's"),
    ("gen_reward.py", ["--task-ids", "10"], "--task-ids 10: libero_goal has tasks 0..9"),
    ("gen_reward.py", ["--max-attempts", "0"], "--max-attempts 0: use 1 or more"),
    ("gen_reward.py", ["--task-ids", "1"], "pass --llm <model name>"),
    ("gen_reward.py", ["--read-timeout", "0"], "--read-timeout 0.0: use a positive number of seconds"),
    ("gen_reward.py", ["--dry-run", "--validation-init-states", "0"], "--validation-init-states 0: LIBERO has 50"),
    ("gen_reward.py", ["--check", "--reward-cpu-seconds", "0"], "--reward-cpu-seconds 0.0: use a positive number"),
    ("gen_reward.py", ["--llm", "m", "--max-retries", "-1"], "--max-retries -1: use 0 (no retry) or more"),
    ("gen_reward.py", ["--llm", "m", "--base-url", "not-a-url"], "--base-url not-a-url: not an http(s) URL"),
]
if not torch.cuda.is_available():
    BAD_INPUTS += [
        (script, ["--device", "cuda"], "--device cuda: no CUDA GPU") for script in ("tgrpo.py", "evaluate.py")
    ]
    BAD_INPUTS += [  # without torchrun too
        (script, ["--model", "tiny", "--dist-backend", "nccl"], "--dist-backend nccl: no CUDA GPU is visible")
        for script in ("tgrpo.py", "evaluate.py")
    ]


def bad_place(name: str, tmp_path: Path, run: Path) -> Path:
    """A bad file or folder for BAD_INPUTS' {name}; `run` is a finished tgrpo.py run (num_envs 2, 2 iterations)."""
    path = tmp_path / name
    if name.endswith(("run", "adapter", "config")):
        shutil.copytree(run / "checkpoint", path / "checkpoint")
    checkpoint, adapter_dir = path / "checkpoint", path / "checkpoint" / "adapter"
    if name in ("truncated_adapter", "empty_config"):  # the adapter folder alone, no trainer_state.json beside it
        (checkpoint / "trainer_state.json").unlink()
        path = adapter_dir
    if name == "a_file":
        path.write_text("not a directory")
    elif name == "empty_dir":
        path.mkdir()
    elif name == "bad_model":
        path.mkdir()
        (path / "config.json").write_text("{not json")
    elif name == "binary_file":
        path.write_bytes(b"def compute_reward(state, info):\n    return 0.0  # \xff\xfe\n")
    elif name == "damaged_run":
        (checkpoint / "rng.pt").write_bytes(b"truncat")
    elif name == "empty_state_run":
        (checkpoint / "trainer_state.json").write_text("{}")
    elif name == "garbage_state_run":
        (checkpoint / "trainer_state.json").write_bytes(bytes(range(256)))
    elif name in ("truncated_run", "truncated_adapter"):
        weights = adapter_dir / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:2000])
    elif name == "empty_config":
        (adapter_dir / "adapter_config.json").write_text("{}")
    return path


@pytest.mark.parametrize("script,argv,message", BAD_INPUTS, ids=[f"{s}:{' '.join(a)}" for s, a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_without_traceback(script, argv, message, tmp_path, tiny_cache, uninterrupted):
    names = {name for arg in argv for name in re.findall(r"{(\w+)}", arg)}
    places = {name: bad_place(name, tmp_path, uninterrupted) for name in names}
    argv = [a.format(**places) for a in argv]
    code, stderr, _ = run_script(script, *argv)
    lines = stderr.strip().splitlines()
    assert code not in (0, None), stderr
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message.format(**places) in lines[0], lines[0]


def test_resuming_a_finished_run_says_so_and_exits_0(uninterrupted, tmp_path):
    shutil.copytree(uninterrupted / "checkpoint", tmp_path / "run" / "checkpoint")
    before = (tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text()
    code, stderr, stdout = run_script("tgrpo.py", "--resume", str(tmp_path / "run"))
    assert code == 0 and stderr == "", stderr
    assert stdout.splitlines() == [
        f"[tgrpo] nothing to do: {tmp_path / 'run'} has completed 2 iterations and --num-iterations is 2; pass a "
        "larger --num-iterations to train on"
    ]
    assert (tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text() == before  # nothing rewritten


def test_an_unreadable_reward_file_is_one_line_naming_it():
    rewards_dir = Path(tempfile.mkdtemp())  # others may enter it (pytest's tmp_path is root's alone)
    reward = rewards_dir / "libero_goal" / "put_the_bowl_on_the_plate.py"  # task 8's
    reward.parent.mkdir()
    for folder in (rewards_dir, reward.parent):
        folder.chmod(0o755)
    reward.write_text(RAISE_EEF)
    reward.chmod(0)  # but not read the file
    train = ["tgrpo.py", "--reward-file", str(reward), "--task-ids", "8"]
    check = ["gen_reward.py", "--check", "--rewards-dir", str(rewards_dir), "--task-ids", "8"]
    as_nobody = os.geteuid() == 0  # root reads any file: read it as the user nobody
    if as_nobody:  # who may not enter /root, where Python may live: load what the commands import, as root
        run_script(*train, "--resume", str(rewards_dir))  # (refused there: no checkpoint, after every check)
        run_script(*check, "--max-tokens", "0")
    try:
        if as_nobody:
            os.seteuid(65534)
        code, stderr, _ = run_script(*train)
        check_code, check_stderr, _ = run_script(*check)
    finally:
        if as_nobody:
            os.seteuid(0)
        shutil.rmtree(rewards_dir)
    assert code == 1 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.strip() == (
        f"error: cannot read the reward file {reward}: Permission denied. Fix the file or its permissions"
    )
    # --check lists every failing file, one line each, and goes on with the others
    assert check_code == 1 and "Traceback" not in check_stderr, check_stderr
    assert f"{reward}: cannot read it ([Errno 13] Permission denied" in check_stderr, check_stderr


def test_llm_api_advice_names_the_flags_that_exist_and_anthropic_urls_take_v1_or_not():
    import gen_reward

    message = gen_reward.refusal_message("openai", "http://h/v1/chat/completions", 404, "no model", "KEY", "m")
    assert "--llm m" in message and "--model" not in message
    for base_url in ("https://api.anthropic.com", "https://api.anthropic.com/v1", "https://api.anthropic.com/v1/"):
        url, _, _ = gen_reward.build_request("anthropic", base_url, "key", "m", [], 10)
        assert url == "https://api.anthropic.com/v1/messages", base_url


def test_groups_that_the_ranks_cannot_share_equally_are_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun --nproc-per-node 2 sets
    code, stderr, _ = run_script("tgrpo.py", "--groups-per-iteration", "3", "--model", "tiny")
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip() == (
        "error: --groups-per-iteration 3: the 2 torchrun ranks collect equal shares: use a multiple of 2"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPUs")
@pytest.mark.parametrize("script", ["tgrpo.py", "evaluate.py"])
def test_nccl_without_gpus_is_one_line(script, monkeypatch, tiny_cache):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; the check comes before the ranks meet
    code, stderr, _ = run_script(script, "--model", "tiny", "--dist-backend", "nccl")
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
    code, stderr, _ = run_script("tgrpo.py", "--resume", str(run_dir), "--num-iterations", "4")
    assert code == 1 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "was trained on 2 rank(s), and this is 1" in stderr
    assert f"torchrun --nproc-per-node 2 tgrpo.py --resume {run_dir}" in stderr


def test_a_bad_suite_is_rejected_by_the_parser_with_the_choices():
    code, stderr, _ = run_script("tgrpo.py", "--suite", "libero_long")
    assert code == 2 and "libero_long" in stderr and "libero_spatial" in stderr and "libero_10" in stderr


POOL_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
import libero_envs

if __name__ == "__main__":
    pool = libero_envs.EnvPool(2)
    print("started", flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        pool.close()
        sys.exit(130)
"""


def test_ctrl_c_while_the_env_workers_import_prints_no_traceback(tmp_path):
    # A worker's imports take seconds after the pool starts it; a Ctrl-C to the process group then is for the
    # parent, which closes the pool. Before the workers started with it ignored, each printed ~30 lines.
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT.format(root=str(ROOT)))
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_ctrl_c,
        start_new_session=True,
    )
    assert process.stdout.readline() == "started\n"
    time.sleep(0.5)  # the workers are importing torch and robosuite now
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]


def test_sigterm_during_an_evaluation_is_one_line_and_exit_130(tiny_cache):
    # A scheduler's SIGTERM to the process group (env workers included) stops evaluate.py as Ctrl-C does.
    argv = ["--model", "tiny", "--device", "cpu", "--task-ids", "8", "9", "--trials-per-task", "4", "--num-envs", "2"]
    process = subprocess.Popen(
        [sys.executable, "evaluate.py", *argv, "--max-steps", "40", "--camera-size", "128"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_ctrl_c,
        start_new_session=True,
    )
    seen = b""
    while b"libero_goal:" not in seen:  # the progress bar: the model is loaded and the episodes are running
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, seen.decode()[-3000:]
        seen += chunk
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    err = (seen + err).decode()
    assert process.returncode == 130, err[-3000:]
    assert err.rstrip().endswith("[evaluate] interrupted; no suite had completed") and "Traceback" not in err, err
