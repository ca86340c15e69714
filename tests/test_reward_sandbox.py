"""Reward code runs confined: hostile reward files of our own (tests/data/hostile/: escapes, load-time attacks, CPU
and memory bombs) run in a real reward process (rewards.RewardProcess, as an EnvPool starts one: kernel-confined,
CPU and memory limits, no secrets in its environment), with and without the AST pre-check, since the run-time
guards must hold alone. Then what the kernel refuses to code that got past the guards, and the leaks of issue 21,
each from its description. That every shipped reward file passes under the same confinement is
tests/test_rewards.py's `gen_reward.py --check --suite all`."""

import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rewards

HOSTILE_DIR = Path(__file__).resolve().parent / "data" / "hostile"
HOSTILE_FILES = sorted(HOSTILE_DIR.glob("*.py"))
SECRET_NAME, SECRET = "OPENAI_API_KEY", "sk-test-0123456789abcdef"
CPU_SECONDS, MEMORY_MB = 1.0, 1024  # 1 s, so that every CPU bomb stops within seconds; the default memory limit
LOAD_TIME_MARKER = "hostile-load-time-marker"  # what the load-time attacks would create in the working directory
STATE = {
    "step": 7,
    "success": False,
    "eef_pos": np.array([0.1, 0.2, 1.1]),
    "eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
    "gripper_qpos": np.array([0.04, -0.04]),
    "gripper_opening": 0.08,
    "objects": {
        "plate_1": {
            "kind": "object",
            "pos": np.zeros(3),
            "quat": np.array([0, 0, 0, 1.0]),
            "grasped": False,
            "joint_qpos": np.zeros(0),
        }
    },
    "goal": [{"predicate": "on", "args": ["akita_black_bowl_1", "plate_1"], "satisfied": False}],
}


def header(path: Path, field: str) -> str:
    """`# expect: cpu` -> "cpu": what a hostile file's header says about it."""
    for line in path.read_text().splitlines():
        if line.startswith(f"# {field}: "):
            return line.split(": ", 1)[1]
    raise AssertionError(f"{path.name} has no '# {field}:' line")


def info_with_marker(marker: Path) -> dict:
    info = rewards.build_reward_info(
        "libero_goal", "put_the_bowl_on_the_plate", "put the bowl on the plate", 300, initial=STATE
    )
    return {**info, "marker": str(marker)}  # where an escape would leave its trace


# ----------------------------------------------------------------------------------------------------------
# The reward process of these tests: a real one, as an EnvPool starts it


def start_child(child: dict) -> None:
    child["process"] = rewards.RewardProcess(CPU_SECONDS, MEMORY_MB)


def run_in_child(child: dict, path: Path, info: dict, precheck: bool = True, timeout: float = 60.0) -> dict:
    """Load the file into the reward process and call it on STATE as env 3: its reward or its one-line error, the
    wall and CPU seconds it took. A process that died (or missed the deadline) is replaced, as a pool would."""
    process = child["process"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before_job = process_cpu_seconds(process.pid)
    start = time.perf_counter()
    try:
        process.load(str(path), path.read_text(), info, timeout=timeout, precheck=precheck)
        reply = {"status": "ok", "value": process.call(STATE, env_index=3, timeout=timeout)}
    except rewards.RewardFileError as error:
        reply = {"status": "error", "value": str(error)}
    reply["wall"] = time.perf_counter() - start
    if process.alive():
        reply["cpu"] = process_cpu_seconds(process.pid) - cpu_before_job
        return reply
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # it was reaped: its CPU time is counted there
    reply["cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime - cpu_before_job
    reply["status"], reply["exitcode"] = "died", process.process.returncode
    process.close()
    start_child(child)
    return reply


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def child():
    """One reward process for the module, started while the parent's environment holds an API key."""
    previous = os.environ.get(SECRET_NAME)
    os.environ[SECRET_NAME] = SECRET
    child = {}
    start_child(child)
    yield child
    child["process"].close()
    if previous is None:
        del os.environ[SECRET_NAME]
    else:
        os.environ[SECRET_NAME] = previous


# ----------------------------------------------------------------------------------------------------------
# Hostile files


def test_the_format_attack_is_real_outside_the_sandbox(monkeypatch):
    """A control: unconfined, the template of str_format_secret.py does read the key from the environment."""
    monkeypatch.setenv(SECRET_NAME, SECRET)
    template = "{0.__globals__[sys].modules[os].environ[OPENAI_API_KEY]}"
    assert template.format(np.full) == SECRET


REFUSED = [path for path in HOSTILE_FILES if header(path, "expect") == "refused"]


@pytest.mark.parametrize("precheck", [True, False], ids=["with-precheck", "guards-alone"])
@pytest.mark.parametrize("path", REFUSED, ids=[path.stem for path in REFUSED])
def test_escape_attempts_are_refused_with_a_clear_line(child, tmp_path, path, precheck):
    marker = tmp_path / "escaped"
    reply = run_in_child(child, path, info_with_marker(marker), precheck=precheck)
    assert reply["status"] == "error", reply
    message = reply["value"]
    assert message.startswith(str(path)) and "\n" not in message, message
    if not precheck:  # what stops it when the pre-check is skipped: a RestrictedPython compile error or a guard
        assert header(path, "guard") in message, message
    if path.stem.startswith("load_time") and not precheck:  # the pre-check refuses some of them from the text alone
        assert message.endswith("while loading the file"), message
    assert SECRET not in message
    assert not marker.exists() and not (Path.cwd() / LOAD_TIME_MARKER).exists()
    assert child["process"].alive()  # it lives on, for the next file


CPU_BOMBS = [path for path in HOSTILE_FILES if header(path, "expect") == "cpu"]


@pytest.mark.parametrize("path", CPU_BOMBS, ids=[path.stem for path in CPU_BOMBS])
def test_a_python_cpu_bomb_stops_at_its_limit_and_the_process_lives_on(child, tmp_path, path):
    reply = run_in_child(child, path, info_with_marker(tmp_path / "escaped"))
    assert reply["status"] == "error", reply
    message = reply["value"]
    assert message.startswith(f"{path} exceeded its CPU-time limit of 1 s per call (--reward-cpu-seconds) (line ")
    assert message.endswith("while loading the file" if "load_time" in path.stem else "at step 7 (env 3)"), message
    # The soft limit is whole seconds of the process's CPU time: it fires within 1-2 s of the call's start.
    assert reply["cpu"] < CPU_SECONDS + 1.5, reply
    assert child["process"].alive()


KILLED = [path for path in HOSTILE_FILES if header(path, "expect") == "killed"]


@pytest.mark.parametrize("path", KILLED, ids=[path.stem for path in KILLED])
def test_a_c_level_cpu_bomb_kills_its_process_and_the_parent_can_tell_why(child, tmp_path, path):
    pid = child["process"].pid
    reply = run_in_child(child, path, info_with_marker(tmp_path / "escaped"))
    assert reply["status"] == "died" and reply["exitcode"] == -signal.SIGPROF, reply
    assert reply["value"] == (
        f"{path} was killed after 4 s of CPU time inside one C-level call that never returned to Python "
        "(e.g. sum(range(10**15))); its limit is 1 s per call (--reward-cpu-seconds) at step 7 (env 3)"
    )
    assert reply["cpu"] < CPU_SECONDS + rewards.CPU_KILL_GRACE_SECONDS + 1.5, reply
    assert reply["wall"] < 20, reply
    assert child["process"].pid != pid and child["process"].alive()  # replaced, as a pool replaces it


MEMORY_BOMBS = [path for path in HOSTILE_FILES if header(path, "expect") == "memory"]


@pytest.mark.parametrize("path", MEMORY_BOMBS, ids=[path.stem for path in MEMORY_BOMBS])
def test_a_memory_bomb_stops_at_its_limit_and_the_process_lives_on(child, tmp_path, path):
    reply = run_in_child(child, path, info_with_marker(tmp_path / "escaped"))
    assert reply["status"] == "error", reply
    assert reply["value"].startswith(f"{path} exceeded its memory limit of 1024 MB (--reward-memory-mb)")
    assert reply["value"].endswith("at step 7 (env 3)"), reply["value"]
    assert reply["wall"] < 10 and child["process"].alive(), reply


# ----------------------------------------------------------------------------------------------------------
# What the kernel refuses: code that got past the Python guards, in a process confined as a reward process is

ESCAPE_PROBE = """
import ctypes, errno, json, os, socket, sys
import rewards

parent, scratch = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
gaps = rewards.confine_reward_process(1024)  # what reward_process_main does before it reads its first request


def libc_call(function, *args):
    if function(*args) == -1:
        raise OSError(ctypes.get_errno(), "")
    return "done"


def forked():
    if os.fork() == 0:
        os._exit(0)
    return "forked"


ESCAPES = {
    "read a file": lambda: open("/etc/passwd").read(),
    "create a file": lambda: open(os.path.join(scratch, "escaped"), "w"),
    "read the parent's environment": lambda: open(f"/proc/{parent}/environ", "rb").read(),
    "read the parent's memory through /proc": lambda: open(f"/proc/{parent}/mem", "rb"),
    "read its memory with process_vm_readv": lambda: libc_call(libc.process_vm_readv, parent, None, 0, None, 0, 0),
    "ptrace the parent": lambda: libc_call(libc.ptrace, 16, parent, None, None),  # PTRACE_ATTACH
    "signal the parent": lambda: os.kill(parent, 0),
    "open an internet socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
    "open a unix socket": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
    "exec a program": lambda: os.execv("/bin/sh", ["sh", "-c", f"touch {scratch}/executed"]),
    "start a process": forked,
}
answers = {}
for name, escape in ESCAPES.items():
    try:
        answers[name] = f"allowed: {escape()!r}"[:100]
    except OSError as error:
        answers[name] = errno.errorcode.get(error.errno, str(error.errno))
print(json.dumps({"gaps": gaps, "uid": os.getuid(), "answers": answers}))
"""


def test_the_kernel_refuses_files_sockets_exec_and_other_processes_to_a_reward_process(tmp_path):
    """As if a reward file had got past every Python guard: what it would try next, and the kernel's answer."""
    was_root = os.geteuid() == 0
    command = [sys.executable, "-c", ESCAPE_PROBE, str(os.getpid()), str(tmp_path)]
    done = subprocess.run(command, env=rewards.reward_process_environment(), capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    probe = json.loads(done.stdout)
    if probe["gaps"]:
        pytest.skip(rewards.gaps_line(probe["gaps"]))
    assert probe["answers"] == {name: "EPERM" for name in probe["answers"]}, probe["answers"]
    assert list(tmp_path.iterdir()) == []
    if was_root:
        assert probe["uid"] != 0  # nobody: the kernel's own permission checks keep it from root's processes too


def test_a_machine_without_seccomp_says_so_in_one_line_and_carries_on(tmp_path, monkeypatch, capfd):
    # As on a machine without libseccomp: the binding fails to import the way pyseccomp does when the library is
    # missing (a stand-in module found first on the reward process's path).
    (tmp_path / "pyseccomp.py").write_text('raise RuntimeError("Unable to find libseccomp")\n')
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    process = rewards.RewardProcess(CPU_SECONDS, MEMORY_MB)
    try:
        process.load("plain.py", "def compute_reward(state, info):\n    return 1.5\n", {})
        assert process.call(STATE, env_index=0) == 1.5  # the Python guards and the limits carry on
    finally:
        process.close()
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith("[rewards] warning: reward processes run without ") and line.endswith(
        "; reward code keeps the Python guards and its CPU and memory limits"
    )
    assert "seccomp (libseccomp is not installed: apt-get install libseccomp2)" in line


# ----------------------------------------------------------------------------------------------------------
# The leaks of issue 21, each from its description


def reward_file(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


VOID_RATCHET = """
import numpy as np

KEEP = np.array([([],)], dtype=[("kept", "O")])  # a list inside a record, reached through an np.void: KEEP[0]


def compute_reward(state, info):
    KEEP[0]["kept"].append(np.ones(50_000_000))  # 400 MB more on every call, each call within its limit
    return 0.0
"""
CAP_ACROSS_LOAD_AND_CALL = """
import numpy as np

BIG = np.zeros(90_000_000)  # 690 MB while loading


def compute_reward(state, info):
    return float(np.zeros(60_000_000).sum())  # 460 MB more: under 1 GB for the call alone, not for the process
"""


def test_memory_cannot_ratchet_up_across_calls(child, tmp_path):
    reply = run_in_child(child, reward_file(tmp_path, "void_ratchet.py", VOID_RATCHET), {})
    assert reply["status"] == "error", reply
    assert reply["value"].startswith(
        f"{tmp_path / 'void_ratchet.py'} broke the reward-file contract: it changes .append() a list built when the "
        "file was loaded"
    ), reply["value"]
    # The cap is the process's address space, whatever was taken when: not "what it has now + 1 GB" per call.
    reply = run_in_child(child, reward_file(tmp_path, "cap.py", CAP_ACROSS_LOAD_AND_CALL), {})
    assert reply["status"] == "error" and child["process"].alive(), reply
    assert reply["value"].startswith(f"{tmp_path / 'cap.py'} exceeded its memory limit of 1024 MB (--reward-memory-mb)")


def test_a_huge_error_text_is_cut_before_it_is_built(child, tmp_path):
    source = 'S = "x" * 2**20\n\n\ndef compute_reward(state, info):\n    raise ValueError([S] * 3000)\n'  # str(): 3 GB
    path = reward_file(tmp_path, "huge_error.py", source)
    reply = run_in_child(child, path, {})
    assert reply["status"] == "error" and child["process"].alive(), reply
    assert reply["value"].startswith(f"{path} raised ValueError: ['xxxx") and len(reply["value"]) < 1000, reply
    assert "(line 5: raise ValueError([S] * 3000)) at step 7 (env 3)" in reply["value"]
    assert reply["wall"] < 5, reply


def test_a_huge_load_time_constant_is_stopped_by_the_limit_of_the_load(tmp_path):
    source = "X = [0.5] * 10**8  # 800 MB\n\n\ndef compute_reward(state, info):\n    return 0.0\n"
    path = reward_file(tmp_path, "huge_constant.py", source)
    fresh = {"process": rewards.RewardProcess(CPU_SECONDS, MEMORY_MB)}  # all of its 1 GB free for the constant
    try:
        reply = run_in_child(fresh, path, {})
        assert reply["status"] == "error" and fresh["process"].alive(), reply
    finally:
        fresh["process"].close()
    assert reply["value"] == (
        f"{path} exceeded its CPU-time limit of 1 s per call (--reward-cpu-seconds) while loading the file"
    )
    assert reply["cpu"] < CPU_SECONDS + 1.5, reply  # not 48.7 s of freezing outside any limit


DEEP_CHAINS = {
    # freed with the call's copy of the state, once compute_reward has returned
    "slice_chain_kept.py": (HOSTILE_DIR.parent / "deep_slice_chain.py").read_text(),
    # freed with the error, once its message was built
    "enumerate_chain_raised.py": """
def compute_reward(state, info):
    chain = [1]
    for _ in range(1_000_000):
        chain = enumerate(chain)
    raise ValueError(chain)
""",
}


@pytest.mark.parametrize("name", list(DEEP_CHAINS))
def test_a_c_stack_overflow_after_the_call_is_the_files_fault(child, tmp_path, name):
    path = reward_file(tmp_path, name, DEEP_CHAINS[name])
    reply = run_in_child(child, path, {})
    assert reply["status"] == "died" and reply["exitcode"] == -signal.SIGSEGV, reply
    assert reply["value"].startswith(f"{path} crashed its reward process (SIGSEGV), e.g. by a C-stack overflow")
    assert "at step 7 (env 3)" in reply["value"] and "\n" not in reply["value"]
    assert child["process"].alive()  # a fresh one


def test_every_hostile_file_is_exercised():
    kinds = {header(path, "expect") for path in HOSTILE_FILES}
    assert kinds == {"refused", "cpu", "killed", "memory"} and len(REFUSED) >= 30


# ----------------------------------------------------------------------------------------------------------
# The guards, the result check and the environment, directly


@pytest.mark.parametrize(
    "value,name",
    [
        ("text", "format"),
        ("text", "format_map"),
        ("text", "__class__"),
        (np.zeros(2), "tofile"),
        (np.zeros(2), "dump"),
        (np.zeros(2), "dumps"),
        (np.zeros(2), "ctypes"),
        (np.zeros(2), "data"),
        (np.zeros(2), "view"),
        (np.full, "func"),
        (len, "name"),
        (float, "fromhex"),
        ((x for x in []), "gi_frame"),
        (rewards.NUMPY_MODULE, "lib"),
        (rewards.NUMPY_MODULE, "load"),
        (rewards.LINALG_MODULE, "linalg"),
        (rewards.MATH_MODULE, "sys"),
    ],
)
def test_the_attribute_guard_refuses_what_leads_out(value, name):
    with pytest.raises(rewards.ContractViolation):
        rewards.guarded_getattr(value, name)


def test_the_import_guard_hands_out_only_stand_ins():
    assert rewards.guarded_import("numpy") is rewards.NUMPY_MODULE
    assert rewards.guarded_import("numpy.linalg") is rewards.NUMPY_MODULE  # `import numpy.linalg` binds numpy
    assert rewards.guarded_import("numpy.linalg", fromlist=("norm",)) is rewards.LINALG_MODULE
    for name in ("os", "sys", "builtins", "numpy.lib", "importlib", "math.os"):
        with pytest.raises(rewards.ContractViolation):
            rewards.guarded_import(name)


LEGITIMATE = """
import math
import numpy as np
import numpy.linalg as la
from numpy.linalg import norm

LINALG = np.linalg  # holding a vetted module in a variable is fine: it still exposes only the vetted names
WEIGHTS = {"reach": 1.0, "lift": 2.0}


def distance(a, b, scale=1.0):
    return scale * float(norm(np.asarray(a) - np.asarray(b)))


def compute_reward(state, info):
    pos = state["eef_pos"]
    start = info["initial"]["eef_pos"]
    terms = [distance(pos, start), LINALG.norm(pos), la.det(np.eye(2))]
    values, vectors = np.linalg.eigh(np.eye(3))
    terms.append(float(np.linalg.eigh(np.eye(3)).eigenvalues.sum()) + float(vectors.shape[0]))
    counts = {}
    for name, entry in sorted(state["objects"].items(), key=lambda item: item[0]):
        counts[name] = len(entry["pos"].tolist())
    scratch = np.zeros(3)
    scratch[1] = 2.0
    state["eef_pos"][0] = 99.0  # its own copy: the caller's state is unchanged
    total = 0.0
    for weight, term in zip(WEIGHTS.values(), terms):
        total += weight * term
    label = f"{state['step']:03d}".zfill(4)
    return float(total + sum(counts.values()) + scratch.max() + math.cos(0.0) + len(label) + np.maximum.reduce([1, 2]))
"""


def test_legitimate_reward_code_runs_under_the_guards_and_cannot_touch_the_callers_data():
    reward_fn = rewards.compile_reward_fn(LEGITIMATE, "legit.py")
    state = {**STATE, "eef_pos": np.array([3.0, 4.0, 0.0])}
    info = rewards.build_reward_info("libero_goal", "task", "do it", 300, STATE)
    value = rewards.call_reward(reward_fn, state, info, cpu_seconds=None, memory_mb=None)
    assert np.isfinite(value) and value == rewards.call_reward(reward_fn, state, info, cpu_seconds=None, memory_mb=None)
    assert state["eef_pos"][0] == 3.0
    assert reward_fn.path == "legit.py" and len(reward_fn.sha256) == 64


@pytest.mark.parametrize(
    "body,message",
    [
        (
            "return state['missing']",
            "legit.py raised KeyError: 'missing' (line 2: return state['missing']) at step 7 "
            "(env 1); state keys ['eef_pos', 'eef_quat', 'goal', 'gripper_opening', "
            "'gripper_qpos', 'objects', 'step', 'success']; objects [plate_1]",
        ),
        ("return float('nan')", "legit.py returned nan at step 7 (env 1); compute_reward must return a finite float"),
        ("return True", "legit.py returned a bool at step 7 (env 1); compute_reward must return one float"),
        ("return state['eef_pos']", "legit.py returned a ndarray of shape (3,) at step 7 (env 1); compute_reward must"),
        ("return 'high'", "legit.py returned a str at step 7 (env 1)"),
        # OverflowError in float() and the digit limit of str(): the file's errors too, not the simulator's
        ("return 10**400", "legit.py returned a number too large for a float at step 7 (env 1); compute_reward"),
        (
            "raise ValueError(10**5000)",
            "legit.py raised ValueError: <an int of about 5001 digits> (line 2: raise ValueError(10**5000)) at step 7",
        ),
    ],
    ids=["raises", "nan", "bool", "array", "string", "int-too-large", "digit-limit"],
)
def test_a_failing_reward_becomes_one_line_naming_file_step_env_and_reason(body, message):
    reward_fn = rewards.compile_reward_fn(f"def compute_reward(state, info):\n    {body}\n", "legit.py")
    with pytest.raises(rewards.RewardFileError) as error:
        rewards.call_reward(reward_fn, STATE, {}, env_index=1, cpu_seconds=None, memory_mb=None)
    assert str(error.value).startswith(message), str(error.value)


def test_the_precheck_names_the_line_of_the_first_problem():
    with pytest.raises(rewards.RewardFileError, match=r"^x.py: line 3 imports 'os'; only math, numpy, numpy.linalg"):
        source = "import math\n\nimport os\ndef compute_reward(state, info):\n    return 0\n"
        rewards.check_reward_source(source, "x.py")


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\nL = np.linalg\nM = L\ndef compute_reward(state, info):\n    return M.lstsq(state)\n",
        "import numpy as np\ndef compute_reward(state, info):\n    L = np\n    return L.linalg.lstsq(state)\n",
        "import numpy\ndef compute_reward(state, info):\n    if (L := numpy.linalg):\n        return L.lstsq(state)\n",
    ],
    ids=["module-constant", "local-name", "walrus"],
)
def test_the_trainers_text_check_follows_a_module_held_in_a_name(source):
    # Without this the trainer accepts the file and a worker refuses it only at its first reset, minutes later.
    with pytest.raises(
        rewards.RewardFileError, match=r"^x.py: line \d uses numpy.linalg.lstsq, which reward files may not$"
    ):
        rewards.check_reward_source(source, "x.py")


def test_secrets_are_stripped_from_the_environment_and_restored_after(monkeypatch):
    names = [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "HF_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "DB_PASSWORD",
        "PGPASS",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SSH_AUTH_SOCK",
        "MY_CUSTOM_THING",
    ]
    for name in names:
        monkeypatch.setenv(name, SECRET)
    monkeypatch.setenv("MUJOCO_GL", "egl")
    before = dict(os.environ)
    clean = rewards.environ_without_secrets(extra_names=["MY_CUSTOM_THING"])
    assert not set(names) & set(clean) and clean["MUJOCO_GL"] == "egl" and clean["PATH"] == os.environ["PATH"]
    with rewards.environment_without_secrets(["MY_CUSTOM_THING"], LP_NUM_THREADS="1"):
        assert not set(names) & set(os.environ) and os.environ["LP_NUM_THREADS"] == "1"
        assert SECRET not in "".join(os.environ.values())
    assert dict(os.environ) == before


def test_the_reward_process_starts_without_the_parents_secret(child):
    reply = run_in_child(child, HOSTILE_DIR / "str_format_secret.py", info_with_marker(Path("/nonexistent")))
    assert reply["status"] == "error" and os.environ[SECRET_NAME] == SECRET  # the parent still has it
    environ = Path(f"/proc/{child['process'].pid}/environ").read_bytes().split(b"\0")  # as the kernel started it
    assert b"PATH=" + os.environ["PATH"].encode() in environ
    assert not [entry for entry in environ if rewards.is_secret_name(entry.split(b"=")[0].decode())]
    assert SECRET.encode() not in b"".join(environ)


def run_validation_process(path: Path, states: list) -> tuple:
    """rewards.validation_main as gen_reward.py starts it: a fresh interpreter, secrets stripped, job on stdin."""
    job = dict(
        source=path.read_text(),
        filename=str(path),
        states=states,
        infos=[{}] * len(states),
        labels=[f"state {k}" for k in range(len(states))],
        cpu_seconds=CPU_SECONDS,
        memory_mb=MEMORY_MB,
    )
    environment = rewards.environ_without_secrets()
    environment["PYTHONPATH"] = str(rewards.REWARDS_DIR.parent)
    done = subprocess.run(
        [sys.executable, "-c", "import rewards; rewards.validation_main()"],
        input=pickle.dumps(job),
        capture_output=True,
        env=environment,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else None


def test_the_validation_process_answers_two_rounds_or_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_NAME, SECRET)
    good = tmp_path / "good.py"
    good.write_text("import numpy as np\ndef compute_reward(state, info):\n    return float(np.sum(state['eef_pos']))")
    states = [{**STATE, "eef_pos": np.array([1.0, 2.0, k])} for k in range(3)]
    assert run_validation_process(good, states) == (0, {"status": "ok", "rounds": [[3.0, 4.0, 5.0]] * 2})
    code, answer = run_validation_process(HOSTILE_DIR / "str_format_secret.py", states)
    assert code == 0 and answer["status"] == "error", answer
    assert answer["message"].startswith(f"{HOSTILE_DIR / 'str_format_secret.py'}: line 11 reads the forbidden")
    code, answer = run_validation_process(HOSTILE_DIR / "cpu_loop.py", states)
    assert answer["message"].endswith("(line 4: while True:) on the state of state 0"), answer


def test_the_contract_helpers():
    assert rewards.reward_file_path("libero_goal", "turn_on_the_stove") == (
        rewards.REWARDS_DIR / "libero_goal" / "turn_on_the_stove.py"
    )
    assert rewards.regenerate_command("libero_goal", 8) == (
        "python gen_reward.py --suite libero_goal --task-ids 8 --provider anthropic --llm <model name>"
    )
    info = rewards.build_reward_info("libero_10", "t", "do it", 520, STATE)
    assert sorted(info) == ["initial", "instruction", "max_steps", "suite", "task_name"] and info["max_steps"] == 520
