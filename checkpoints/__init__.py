"""The plumbing of a tgrpo.py run: checkpoints that no crash, full disk or damaged file can cost the last good one;
the run directory; what --resume needs besides the checkpoint (the run's own arguments, a word when a reward file
changed); and the stop on Ctrl-C or SIGTERM that ends in a checkpoint.

<run>/checkpoint is replaced by a swap through checkpoint.tmp and checkpoint.old. Its trainer_state.json is
written last and records the size and sha256 of every other file, so a checkpoint is complete exactly when that
file parses and every file matches it. `--resume` verifies before it renames or deletes anything, falls back to
the newest complete checkpoint with one line, and tidies the others last.
"""

import errno
import hashlib
import json
import os
import random
import shutil
import signal
from dataclasses import asdict, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from cli import UsageError

CHECKPOINT_NAMES = ("checkpoint", "checkpoint.tmp", "checkpoint.old")
STATE_FILE = "trainer_state.json"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------------
# Writing


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_records(directory: Path) -> dict:
    """{path relative to `directory`: {"bytes", "sha256"}} of every file in it but trainer_state.json."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != STATE_FILE)
    return {p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}


def stepped_weights(optimizer) -> list:
    """The tensors the optimizer steps: tgrpo.py's fp32 master copies of the model's LoRA weights, in its order."""
    return [param for group in optimizer.param_groups for param in group["params"]]


def trained_lora(model, optimizer) -> dict:
    """The LoRA weights by the model's names, as the optimizer steps them: in fp32, where the model's own are their
    bf16 rounding."""
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    weights = stepped_weights(optimizer)
    assert len(names) == len(weights), "the optimizer must step the model's trainable weights, in order"
    return dict(zip(names, weights))


def write_checkpoint_files(directory: Path, model, optimizer, trainer_state: dict, rng: dict) -> None:
    directory.mkdir(parents=True)
    # LoRA weights only: PEFT would add the full embeddings and lm_head (0.5 GB for 7B) because all-linear
    # adapts lm_head, but the base copies never change.
    model.save_pretrained(
        str(directory / "adapter"), save_embedding_layers=False, state_dict=trained_lora(model, optimizer)
    )
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(rng, directory / "rng.pt")
    files = file_records(directory)
    for name in files:
        with open(directory / name, "rb") as handle:
            os.fsync(handle.fileno())
    # Last, and renamed into place whole: its presence marks the checkpoint complete, its records make it checkable.
    partial = directory / f"{STATE_FILE}.partial"
    with open(partial, "w") as handle:
        handle.write(json.dumps({**trainer_state, "files": files}, indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, directory / STATE_FILE)


def save_checkpoint(run_dir: Path, model, optimizer, trainer_state: dict, rng: dict) -> Path:
    """Write run_dir/checkpoint so that a crash at any instant leaves a complete one under some name."""
    final, tmp, old = (run_dir / name for name in CHECKPOINT_NAMES)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_checkpoint_files(tmp, model, optimizer, trainer_state, rng)
    except (OSError, RuntimeError, SafetensorError) as error:  # torch and safetensors report a full disk their way
        shutil.rmtree(tmp, ignore_errors=True)
        free_mb = shutil.disk_usage(run_dir).free / 2**20 if run_dir.exists() else 0
        full = getattr(error, "errno", None) == errno.ENOSPC or free_mb < 100
        kept = f"the last good checkpoint is kept at {final}" if final.exists() else "no earlier checkpoint exists"
        raise UsageError(
            f"could not write the checkpoint of iteration {trainer_state['iteration']} to {tmp}: "
            f"{'the disk is full' if full else 'write failed'} ({free_mb:.0f} MB free; {type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}); {kept}. Free space or fix permissions, then --resume {run_dir}"
        ) from None
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------------------------
# Reading: verify first, touch last


def read_trainer_state(directory: Path) -> tuple:
    """(state, problem): (dict, None) when trainer_state.json is whole; (None, None) when it does not exist (a save
    cut short: nothing is damaged); (None, "<file> is damaged (why)") otherwise."""
    path = directory / STATE_FILE
    if not path.is_file():
        return None, None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"{path} is damaged ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:100]})"
    if not isinstance(state, dict):
        return None, f"{path} is damaged (it holds a {type(state).__name__}, not the trainer's state)"
    wrong = [key for key, kind in (("iteration", int), ("args", dict)) if not isinstance(state.get(key), kind)]
    files = state.get("files", {})  # optional: checkpoints written before the records existed lack it
    if not isinstance(files, dict) or not all(isinstance(record, dict) for record in files.values()):
        wrong.append("files")
    if wrong:
        return None, f"{path} is damaged (missing or malformed: {', '.join(wrong)})"
    return state, None


def file_problem(directory: Path, files: dict) -> Optional[str]:
    """The first file of the checkpoint that is missing or differs from what was recorded when it was written."""
    for name, record in files.items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != record.get("bytes"):
            return f"{path} is damaged ({size} bytes; {record.get('bytes')} were written)"
        if sha256_of(path) != record.get("sha256"):
            return f"{path} is damaged (its sha256 differs from the one recorded when it was written)"
    return None


def inspect_checkpoint(directory: Path) -> tuple:
    """(state, problem) of one checkpoint directory, its files checked: see read_trainer_state."""
    state, problem = read_trainer_state(directory)
    if state is not None:
        problem = file_problem(directory, state.get("files", {}))
    return (None, problem) if problem else (state, None)


def find_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run, under whichever name a crash left it, renamed to `checkpoint`.

    Every candidate is verified before anything is renamed or deleted; damaged ones are named in one line and
    skipped, and the others are deleted only once the chosen one is in place."""
    directories = [run_dir / name for name in CHECKPOINT_NAMES if (run_dir / name).is_dir()]
    found = {directory: inspect_checkpoint(directory) for directory in directories}
    complete = {directory: state for directory, (state, _) in found.items() if state is not None}
    problems = [problem for _, problem in found.values() if problem]
    if not complete and problems:
        raise UsageError(
            f"--resume {run_dir}: {problems[0]}, and no older complete checkpoint is there to fall back to. Restore "
            "the run directory from a backup, or start a new run without --resume"
        )
    if not complete:
        raise UsageError(
            f"--resume {run_dir}: no complete checkpoint there (looked for {', '.join(CHECKPOINT_NAMES)}). "
            "Pass a runs/<run_name> directory written by tgrpo.py, or start a new run without --resume"
        )
    newest = max(complete, key=lambda directory: complete[directory]["iteration"])
    if problems:
        print(
            f"[tgrpo] warning: {'; '.join(problems)}: resuming from {newest.name}, the newest complete checkpoint "
            f"(iteration {complete[newest]['iteration']})"
        )
    final = run_dir / "checkpoint"
    if newest != final:
        spare = next(run_dir / name for name in CHECKPOINT_NAMES[1:] if run_dir / name != newest)
        shutil.rmtree(spare, ignore_errors=True)  # verified not to be the one resumed from
        if final.exists():
            os.replace(final, spare)
        os.replace(newest, final)
    for name in CHECKPOINT_NAMES[1:]:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    return final


def damaged_file_error(path: Path, error: Exception) -> UsageError:
    reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:150]}"
    return UsageError(
        f"the checkpoint file {path} is damaged ({reason}); restore it from a backup, or start a new run without --resume"
    )


def adapter_problem(adapter_dir: Path) -> Optional[str]:
    """What makes a saved LoRA adapter unloadable, read from its files alone (no model needed), or None: a config
    that is not a LoRA one, weights cut short; and, inside a tgrpo.py checkpoint, any file that differs from the
    records of its trainer_state.json."""
    state, _ = read_trainer_state(adapter_dir.parent)  # a damaged state file does not damage the adapter
    if state is not None and adapter_dir.name == "adapter":
        records = {name: record for name, record in state.get("files", {}).items() if name.startswith("adapter/")}
        problem = file_problem(adapter_dir.parent, records)
        if problem:
            return problem
    config_path, weights_path = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        return f"{config_path} is damaged ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:100]})"
    if not isinstance(config, dict) or config.get("peft_type") != "LORA" or not config.get("r"):
        return f"{config_path} is not a LoRA adapter's config (no peft_type LORA with a rank r)"
    try:
        with safe_open(str(weights_path), "pt") as weights:
            weights.keys()
    except Exception as error:  # safetensors raises its own error types, and OSError for a missing file
        return f"{weights_path} is damaged ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:100]})"
    return None


def read_checkpoint_files(checkpoint: Path) -> dict:
    """Optimizer and RNG states, and the adapter's files checked, before any model loads."""
    loaded = {}
    for name in ("optimizer.pt", "rng.pt"):
        try:
            loaded[name] = torch.load(checkpoint / name, weights_only=False)
        except Exception as error:
            raise damaged_file_error(checkpoint / name, error) from None
    problem = adapter_problem(checkpoint / "adapter")
    if problem:
        raise UsageError(f"--resume {checkpoint.parent}: {problem}; restore it from a backup, or start a new run")
    return loaded


# ----------------------------------------------------------------------------------------------------------
# The run directory; resuming a run: its arguments and its reward files


def prepare_run_dir(args, started: int) -> Path:
    """The run directory, named after `started` (rank 0's clock), created and proven writable before anything
    slow happens."""
    run_dir = (
        Path(args.resume)
        if args.resume
        else Path(args.output_dir) / f"{args.suite}__{args.exp_name}__{args.seed}__{started}"
    )
    flag = "--resume" if args.resume else "--output-dir"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        where = args.resume or args.output_dir
        raise UsageError(
            f"{flag} {where}: cannot write to {run_dir} ({error.strerror}); choose a writable directory"
        ) from None
    return run_dir


def flags_given(argv: list) -> set:
    """The Args fields a command line names (--num-envs 4, --num-envs=4, --no-track), even at their defaults."""
    names = {arg[2:].split("=")[0].replace("-", "_") for arg in argv if arg.startswith("--")}
    return names | {name[3:] for name in names if name.startswith("no_")}


def resumed_args(args, saved_args: dict, run_dir: Path, given_flags: set, safe_to_change: set):
    """The run's own arguments (`saved_args`, into the dataclass of `args`); a flag the user gave (`given_flags`, or
    any value off its default) overrides them only where that is safe (`safe_to_change`: the fields that do not
    change what is learned)."""
    defaults = asdict(type(args)())
    merged = {}
    for field in fields(args):
        saved, given = saved_args.get(field.name, defaults[field.name]), getattr(args, field.name)
        saved = tuple(saved) if isinstance(saved, list) else saved
        merged[field.name] = saved
        if given == saved or (given == defaults[field.name] and field.name not in given_flags):
            continue
        if field.name not in safe_to_change:
            flag = "--" + field.name.replace("_", "-")
            raise UsageError(
                f"--resume {run_dir}: the run was trained with {flag} {saved}, not {given}; that cannot change "
                f"mid-run. Resume without {flag}, or start a new run"
            )
        merged[field.name] = given
    merged["resume"] = str(run_dir)
    return type(args)(**merged)


def warn_changed_rewards(saved_hashes: dict, reward_files: dict) -> None:
    """One line for each reward file whose sha256 differs from the checkpoint's record of it."""
    for task_id, reward_file in reward_files.items():
        before = saved_hashes.get(str(task_id))
        if before is not None and before != reward_file.sha256:
            print(
                f"[tgrpo] warning: {reward_file.path} changed since the checkpoint; the run continues with the new one"
            )


# ----------------------------------------------------------------------------------------------------------
# Stopping: Ctrl-C, or a scheduler's SIGTERM, ends the run with a checkpoint


class StopNow(BaseException):
    """A second Ctrl-C: leave at once, without a checkpoint (the model may be between two optimizer steps)."""


def stop_on_signals(distributed: bool):
    """Ctrl-C, or the SIGTERM a scheduler sends before preempting a job, asks the run to stop: a collection or
    evaluation ends at its next step, an update in progress finishes, then the run saves and exits 130. Every
    rank decides at the same point of the loop, so none waits forever for one that left. A second Ctrl-C stops
    at once, except under torchrun: it passes each Ctrl-C on to the ranks once more and ends them itself.
    Returns stop_requested(): whether a stop was asked for."""
    received = []

    def handler(signum, frame):
        received.append(signum)
        if len(received) == 1:
            print("\n[tgrpo] stop requested: finishing this step or update, then saving (Ctrl-C again: stop now)")
        elif len(received) == 2 and not distributed:  # later ones: already stopping at once
            raise StopNow

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    return lambda: bool(received)
