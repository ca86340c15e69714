"""gen_reward.py against a real HTTP server on 127.0.0.1 speaking each provider's wire format, on real LIBERO states.

Generation runs in-process through gen_reward.main (the validation states are collected once per test session);
the --check commands run as the user types them.
"""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the spawned validation process inherits sys.path and imports gen_reward from here

import cli  # noqa: E402
import gen_reward  # noqa: E402
import recordings  # noqa: E402
import rewards  # noqa: E402
import libero_envs  # noqa: E402

API_KEY = "sk-test-SECRET123"
SUITE, TASK_ID, TASK_NAME = "libero_goal", 8, "put_the_bowl_on_the_plate"

VALID_REWARD = """
import numpy as np

BOWL = "akita_black_bowl_1"


def compute_reward(state, info):
    distance = np.linalg.norm(state["eef_pos"] - state["objects"][BOWL]["pos"])
    return float(1.0 * state["objects"][BOWL]["grasped"] + np.exp(-5.0 * distance))
"""
SYNTAX_ERROR_REWARD = """
def compute_reward(state, info)
    return 1.0
"""
NAN_REWARD = """
import numpy as np


def compute_reward(state, info):
    return float(np.sqrt(state["eef_pos"][2] - 10.0))
"""
CONSTANT_REWARD = """
def compute_reward(state, info):
    return 1.0
"""


def os_reward(marker: Path) -> str:
    """A reply that would create `marker` the moment it was executed."""
    return f"""
import os

MARKER = os.makedirs({str(marker)!r}, exist_ok=True)


def compute_reward(state, info):
    os.makedirs({str(marker)!r}, exist_ok=True)
    return 0.0
"""


def fenced(code: str) -> str:
    return f"Here is the reward function.\n\n```python\n{code.strip()}\n```\n"


# ----------------------------------------------------------------------------------------------------------
# A scripted LLM server


def ok(text: str, delay: float = 0.0) -> dict:
    return {"status": 200, "text": text, "delay": delay}


def http_error(status: int, message: str, headers: dict = None) -> dict:
    return {"status": status, "message": message, "headers": headers or {}}


def wire_body(provider: str, reply: dict) -> dict:
    if reply["status"] == 200 and provider == "anthropic":
        return {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": "test-model",
            "content": [{"type": "text", "text": reply["text"]}],
            "stop_reason": "end_turn",
        }
    if reply["status"] == 200:
        choice = {"index": 0, "message": {"role": "assistant", "content": reply["text"]}, "finish_reason": "stop"}
        return {"id": "chatcmpl-test", "object": "chat.completion", "choices": [choice]}
    if provider == "anthropic":
        return {"type": "error", "error": {"type": "api_error", "message": reply["message"]}}
    return {"error": {"message": reply["message"], "type": "invalid_request_error", "code": None}}


class ScriptedLLM:
    """Answers the n-th POST with the n-th scripted reply and records every request it got."""

    def __init__(self, provider: str, replies: list):
        self.provider, self.replies, self.requests = provider, list(replies), []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        root = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.base_url = root if provider == "anthropic" else f"{root}/v1"
        self.expected_path = "/v1/messages" if provider == "anthropic" else "/v1/chat/completions"

    def handler_class(self):
        llm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                llm.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "time": time.monotonic()}
                )
                reply = llm.replies.pop(0) if llm.replies else http_error(500, "the test script has no more replies")
                if self.path != llm.expected_path:
                    reply = http_error(404, f"no route {self.path}")
                time.sleep(reply.get("delay", 0.0))
                payload = json.dumps(wire_body(llm.provider, reply)).encode()
                try:
                    self.send_response(reply["status"])
                    for name, value in {**reply.get("headers", {}), "Content-Type": "application/json"}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the read-timeout test)

            def log_message(self, *args):
                pass

        return Handler

    def last_user_message(self, request_index: int) -> str:
        return self.requests[request_index]["body"]["messages"][-1]["content"]


@pytest.fixture
def llm_server():
    servers = []

    def start(provider: str, replies: list) -> ScriptedLLM:
        servers.append(ScriptedLLM(provider, replies))
        return servers[-1]

    yield start
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture(autouse=True)
def api_keys(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def make_args(tmp_path: Path, server: ScriptedLLM = None, **overrides) -> gen_reward.Args:
    settings = dict(
        suite=SUITE,
        task_ids=(TASK_ID,),
        provider=server.provider if server else "anthropic",
        llm="test-model",
        base_url=server.base_url if server else None,
        rewards_dir=str(tmp_path / "rewards"),
        retry_backoff=0.01,
        validation_init_states=2,
        validation_random_steps=3,
    )
    settings.update(overrides)
    return gen_reward.Args(**settings)


def output_file(tmp_path: Path) -> Path:
    return tmp_path / "rewards" / SUITE / f"{TASK_NAME}.py"


def assert_key_absent(tmp_path: Path, *texts: str) -> None:
    for text in texts:
        assert API_KEY not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path


def run_main_expecting_exit(args: gen_reward.Args) -> str:
    """The message the command line prints: a user error (one line) or the list of failed tasks."""
    with pytest.raises((SystemExit, libero_envs.UsageError)) as exit_info:
        gen_reward.main(args)
    if isinstance(exit_info.value, SystemExit):
        assert exit_info.value.code not in (0, None)
        return str(exit_info.value.code)
    return str(exit_info.value)


# ----------------------------------------------------------------------------------------------------------
# Generation


def test_anthropic_valid_reply_writes_a_validated_file(tmp_path, llm_server, capfd):
    server = llm_server("anthropic", [ok(fenced(VALID_REWARD))])
    output_file(tmp_path).parent.mkdir(parents=True)
    output_file(tmp_path).write_text("# an older file that --overwrite replaces\n")

    gen_reward.main(make_args(tmp_path, server, overwrite=True))

    (request,) = server.requests
    assert request["path"] == "/v1/messages"
    assert request["headers"]["x-api-key"] == API_KEY
    assert request["headers"]["anthropic-version"] == "2023-06-01"
    assert request["body"]["model"] == "test-model" and request["body"]["max_tokens"] > 0
    (message,) = request["body"]["messages"]
    prompt = message["content"]
    assert message["role"] == "user" and "put the bowl on the plate" in prompt and "(:goal" in prompt

    text = output_file(tmp_path).read_text()
    assert text.startswith(f'# Reward for {SUITE} / {TASK_NAME}: "put the bowl on the plate".')
    assert "anthropic model test-model" in text
    assert f"# Prompt sha256: {hashlib.sha256(prompt.encode()).hexdigest()}" in text
    assert "# Validation: 8 states" in text and "targets derived from object positions" in text
    assert VALID_REWARD.strip() in text
    reward_fn = rewards.load_reward_fn(output_file(tmp_path))
    states, infos, _ = gen_reward.collect_validation_states(SUITE, TASK_ID, 2, 3, 0)
    assert np.isfinite(reward_fn(states[0], infos[0]))
    assert list(output_file(tmp_path).parent.iterdir()) == [output_file(tmp_path)]  # no temporary file left
    out, err = capfd.readouterr()
    assert_key_absent(tmp_path, out, err)


def test_openai_invalid_replies_are_sent_back_with_their_errors(tmp_path, llm_server, capfd):
    marker = tmp_path / "os_reply_was_executed"
    replies = [ok(fenced(SYNTAX_ERROR_REWARD)), ok(fenced(os_reward(marker))), ok(fenced(NAN_REWARD))]
    replies.append(ok(fenced(VALID_REWARD)))
    server = llm_server("openai", replies)

    gen_reward.main(make_args(tmp_path, server, max_attempts=4))

    assert len(server.requests) == 4
    for request in server.requests:
        assert request["path"] == "/v1/chat/completions"
        assert request["headers"]["Authorization"] == f"Bearer {API_KEY}"
    conversation = server.requests[3]["body"]["messages"]
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert conversation[1]["content"] == fenced(SYNTAX_ERROR_REWARD)  # the previous reply goes back too
    assert "syntax error at line 1: expected ':'" in server.last_user_message(1)
    assert "imports 'os'" in server.last_user_message(2)
    assert "returned nan" in server.last_user_message(3)
    assert not marker.exists()
    text = output_file(tmp_path).read_text()
    assert "openai model test-model (reply 4 of at most 4)" in text and "import os" not in text
    out, err = capfd.readouterr()
    assert_key_absent(tmp_path, out, err)


def test_reply_importing_os_is_never_executed_and_nothing_is_written(tmp_path, llm_server):
    marker = tmp_path / "os_reply_was_executed"
    server = llm_server("anthropic", [ok(fenced(os_reward(marker))), ok("I cannot help with that.")])

    message = run_main_expecting_exit(make_args(tmp_path, server, max_attempts=2))

    assert "no valid reward after 2 attempts" in message
    assert "imports 'os'" in message and "no ```python code block" in message
    assert len(server.requests) == 2
    assert not marker.exists()
    assert not output_file(tmp_path).exists()


def test_rate_limit_and_server_error_are_retried_honouring_retry_after(tmp_path, llm_server, capfd):
    echoed = f"rate limited for key {API_KEY}"  # servers sometimes echo the key; it must be redacted
    replies = [http_error(429, echoed, {"Retry-After": "1"}), http_error(503, f"overloaded ({API_KEY})")]
    replies.append(ok(fenced(VALID_REWARD + f"\n# the server echoed {API_KEY}\n")))
    server = llm_server("anthropic", replies)

    gen_reward.main(make_args(tmp_path, server))

    assert len(server.requests) == 3
    assert server.requests[1]["time"] - server.requests[0]["time"] >= 0.95  # waited for Retry-After: 1
    assert server.requests[2]["time"] - server.requests[1]["time"] < 0.9  # then the 0.01 s backoff
    assert "[REDACTED]" in output_file(tmp_path).read_text()
    out, err = capfd.readouterr()
    assert "HTTP 429" in err and "HTTP 503" in err and "[REDACTED]" in err
    assert_key_absent(tmp_path, out, err)


def test_unauthorized_fails_at_once_naming_the_key_variable(tmp_path, llm_server, capfd):
    server = llm_server("openai", [http_error(401, f"Incorrect API key provided: {API_KEY}")])

    message = run_main_expecting_exit(make_args(tmp_path, server))

    assert len(server.requests) == 1
    assert "openai API refused the request: HTTP 401" in message
    assert "Incorrect API key provided: [REDACTED]" in message
    assert "check OPENAI_API_KEY" in message
    assert not output_file(tmp_path).exists()
    out, err = capfd.readouterr()
    assert_key_absent(tmp_path, message, out, err)


def test_slow_server_hits_the_read_timeout(tmp_path, llm_server, capfd):
    server = llm_server("anthropic", [ok(fenced(VALID_REWARD), delay=2.0), ok(fenced(VALID_REWARD), delay=2.0)])

    start = time.monotonic()
    message = run_main_expecting_exit(make_args(tmp_path, server, read_timeout=0.5, max_retries=1))

    assert time.monotonic() - start < 10
    assert len(server.requests) == 2  # the first try and one retry
    assert "anthropic request failed 2 times" in message
    assert "no reply within the read timeout of 0.5 s" in message and "--read-timeout" in message
    assert not output_file(tmp_path).exists()
    out, err = capfd.readouterr()
    assert_key_absent(tmp_path, message, out, err)


def test_missing_api_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    message = run_main_expecting_exit(make_args(tmp_path, base_url="http://127.0.0.1:9"))
    assert "ANTHROPIC_API_KEY is not set" in message and "--api-key-env" in message

    message = run_main_expecting_exit(make_args(tmp_path, base_url="http://127.0.0.1:9", api_key_env="MY_LLM_KEY"))
    assert "MY_LLM_KEY is not set" in message


def test_existing_file_is_kept_without_overwrite(tmp_path, llm_server):
    server = llm_server("anthropic", [ok(fenced(VALID_REWARD))])
    output_file(tmp_path).parent.mkdir(parents=True)
    output_file(tmp_path).write_text("# kept\n")

    gen_reward.main(make_args(tmp_path, server))

    assert server.requests == []
    assert output_file(tmp_path).read_text() == "# kept\n"


# ----------------------------------------------------------------------------------------------------------
# The prompt and the demonstrations


def write_demo_file(path: Path) -> None:
    """Two demos that close then open the gripper, one odd demo that never closes it."""
    with h5py.File(path, "w") as f:
        for k, offset in enumerate((0.0, 0.02)):
            steps = np.arange(30)
            eef = np.stack([0.1 + offset + 0.01 * steps, np.zeros(30), 1.0 - 0.005 * steps], axis=1)
            gripper = np.where((steps >= 10) & (steps < 20), 1.0, -1.0)  # closes at 10, opens at 20
            f.create_dataset(f"data/demo_{k}/obs/ee_pos", data=eef)
            f.create_dataset(f"data/demo_{k}/actions", data=np.concatenate([np.zeros((30, 6)), gripper[:, None]], 1))
        f.create_dataset("data/demo_2/obs/robot0_eef_pos", data=np.ones((5, 3)))
        f.create_dataset("data/demo_2/actions", data=-np.ones((5, 7)))


def test_key_poses_come_from_gripper_transitions_of_the_demos(tmp_path):
    demo_file = tmp_path / f"{TASK_NAME}_demo.hdf5"
    write_demo_file(demo_file)

    key_poses = gen_reward.extract_key_poses(demo_file)

    assert key_poses["num_demos"] == 3 and key_poses["num_matching"] == 2
    events = [event for event, _, _ in key_poses["poses"]]
    assert events == ["gripper closes", "gripper opens", "demonstration ends"]
    np.testing.assert_allclose(key_poses["poses"][0][1], [0.21, 0.0, 0.95])  # mean of 0.2 and 0.22 at step 10
    np.testing.assert_allclose(key_poses["poses"][1][1], [0.31, 0.0, 0.90])
    np.testing.assert_allclose(key_poses["poses"][0][2], [0.01, 0.0, 0.0], atol=1e-12)


def task_facts(task_id: int) -> tuple:
    """What a prompt must carry from the task itself: its BDDL file and the real positions of its first state."""
    task = libero_envs.get_task(SUITE, task_id)
    states, infos, _ = gen_reward.collect_validation_states(SUITE, task_id, 1, 1, 0)
    return task, Path(libero_envs.task_bddl_path(task)).read_text().strip(), states[0], infos[0]


@pytest.mark.parametrize("task_id", [TASK_ID, 0])
def test_dry_run_prompt_carries_the_tasks_own_bddl_values_and_cap(task_id, tmp_path, capfd):
    gen_reward.main(
        make_args(tmp_path, task_ids=(task_id,), dry_run=True, validation_init_states=1, validation_random_steps=1)
    )

    prompt = capfd.readouterr().out
    task, bddl, state, info = task_facts(task_id)
    assert f'instruction: "{task.language}"' in prompt and bddl in prompt
    for name, entry in state["objects"].items():  # every BDDL object with its real position in init state 0
        assert f"pos {gen_reward.format_vector(entry['pos'])}" in prompt and name in prompt
    assert f"eef_pos {gen_reward.format_vector(state['eef_pos'])}" in prompt
    # The run's `info` and the prompt agree on the step cap: the training cap of the suite.
    assert info["max_steps"] == cli.TRAIN_MAX_STEPS[SUITE] == 200
    assert f'"max_steps": {info["max_steps"]}' in prompt


def test_dry_run_prints_the_demo_key_poses_and_needs_no_key(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    write_demo_file(tmp_path / f"{TASK_NAME}_demo.hdf5")

    gen_reward.main(make_args(tmp_path, llm=None, dry_run=True, demos=str(tmp_path)))

    prompt = capfd.readouterr().out
    for expected in ("KEY_POSE_1 (gripper closes): [0.210 0.000 0.950]", "from 2 of the 3 demonstrations"):
        assert expected in prompt, expected
    assert f"a different task: {SUITE}/{TASK_NAME}" not in prompt  # never the task itself as the example
    assert not output_file(tmp_path).exists()


def test_dry_run_of_another_task_shows_the_bowl_example(tmp_path, capfd):
    gen_reward.main(
        make_args(tmp_path, task_ids=(0,), dry_run=True, validation_init_states=1, validation_random_steps=1)
    )

    prompt = capfd.readouterr().out
    assert "open_the_middle_drawer_of_the_cabinet" in prompt
    assert f"# Worked example (a different task: {SUITE}/{TASK_NAME})" in prompt
    assert 'BOWL = "akita_black_bowl_1"' in prompt and "# Made by" not in prompt
    assert "derive every target pose from the live object positions" in prompt.lower()


# ----------------------------------------------------------------------------------------------------------
# The validator (shared by generation and --check)

ENDLESS_REWARD = """
def compute_reward(state, info):
    while True:
        pass
"""
STATEFUL_REWARD = """
CALLS = []


def compute_reward(state, info):
    CALLS.append(state["step"])
    return float(len(CALLS))
"""
CRASHING_REWARD = """
def compute_reward(state, info):
    bowl = state["objects"]["bowl_1"]["pos"]
    return float(bowl[0])
"""


SECRET_READING_REWARD = """
def compute_reward(state, info):
    return float(len("{0.__class__}".format(state)))
"""


@pytest.mark.parametrize(
    "source, expected",
    [
        (ENDLESS_REWARD, "exceeded its CPU-time limit of 1 s per call (--reward-cpu-seconds)"),
        (STATEFUL_REWARD, "a call must keep nothing for the next one"),
        (CRASHING_REWARD, 'raised KeyError: \'bowl_1\' (line 3: bowl = state["objects"]["bowl_1"]["pos"])'),
        (SECRET_READING_REWARD, "line 3 reads the forbidden attribute 'format'"),  # caught before it runs
    ],
    ids=["endless-loop", "stateful", "crash", "format-traversal"],
)
def test_validator_rejects_with_the_reason(source, expected, tmp_path):
    start = time.monotonic()
    args = make_args(tmp_path, reward_cpu_seconds=1.0)
    with pytest.raises(rewards.RewardFileError) as error:
        gen_reward.validate_reward_source(source, SUITE, TASK_ID, "probe.py", args)
    assert str(error.value).startswith("probe.py") and expected in str(error.value), str(error.value)
    assert time.monotonic() - start < 90


def validation_process_environments(stop: threading.Event, seen: list) -> None:
    """Read the environment of every running validation process (as the kernel started it) until `stop`."""
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and b"rewards.validation_main" in (proc / "cmdline").read_bytes():
                    seen.append((proc / "environ").read_bytes())
            except OSError:  # the process ended meanwhile
                pass
        time.sleep(0.05)


def test_the_validation_process_gets_no_api_key(tmp_path, llm_server, monkeypatch):
    # A variable name no secret pattern catches: the process must still not get it, as it holds the API key.
    monkeypatch.setenv("MY_LLM", API_KEY)
    server = llm_server("anthropic", [ok(fenced(ENDLESS_REWARD))])  # keeps the process alive for its CPU limit
    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=validation_process_environments, args=(stop, seen))
    watcher.start()
    try:
        args = make_args(tmp_path, server, api_key_env="MY_LLM", max_attempts=1, reward_cpu_seconds=2.0)
        message = run_main_expecting_exit(args)
    finally:
        stop.set()
        watcher.join()
    assert server.requests[0]["headers"]["x-api-key"] == API_KEY  # the key was in use by the parent
    assert "exceeded its CPU-time limit" in message
    assert seen and all(API_KEY.encode() not in environ and b"PATH=" in environ for environ in seen)


# ----------------------------------------------------------------------------------------------------------
# --check


def run_cli(*flags: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if not name.endswith("_API_KEY")}
    command = [sys.executable, "gen_reward.py", *flags]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def test_check_passes_on_the_shipped_example():
    result = run_cli("--check", "--suite", SUITE, "--task-ids", str(TASK_ID))
    assert result.returncode == 0, result.stderr
    assert f"OK rewards/{SUITE}/{TASK_NAME}.py: 24 states" in result.stderr
    assert "all 1 reward files passed --check" in result.stdout


def test_check_fails_on_a_constant_reward_file(tmp_path):
    output_file(tmp_path).parent.mkdir(parents=True)
    output_file(tmp_path).write_text(CONSTANT_REWARD)

    result = run_cli(
        "--check", "--suite", SUITE, "--task-ids", str(TASK_ID), "--rewards-dir", str(tmp_path / "rewards")
    )

    assert result.returncode == 1
    assert "1 of 1 reward files failed --check" in result.stderr
    assert f"{output_file(tmp_path)}: compute_reward returned the same value 1.0 on all 24 states" in result.stderr


def test_check_lists_missing_and_rejected_files_with_remedies(tmp_path):
    output_file(tmp_path).parent.mkdir(parents=True)
    output_file(tmp_path).write_text("import subprocess\n\ndef compute_reward(state, info):\n    return 0.0\n")

    message = run_main_expecting_exit(make_args(tmp_path, task_ids=None, check=True))

    assert "10 of 10 reward files failed --check" in message
    assert f"{output_file(tmp_path)}: line 1 imports 'subprocess'" in message
    missing = tmp_path / "rewards" / SUITE / "open_the_middle_drawer_of_the_cabinet.py"
    command = f"python gen_reward.py --suite {SUITE} --task-ids 0 --provider anthropic --llm <model name>"
    assert f"{missing}: missing. Generate it with: {command} --rewards-dir {tmp_path / 'rewards'}" in message


def test_check_of_all_suites_covers_the_four_suites_and_any_perturbation_file_that_exists(tmp_path):
    own = tmp_path / "libero_goal_task" / f"{libero_envs.get_task('libero_goal_task', 2).name}.py"
    own.parent.mkdir()
    own.write_text("def compute_reward(state, info):\n    return 0.0\n")
    selected = [(suite, task_id) for suite, task_id, _ in gen_reward.select_tasks("all", None, str(tmp_path))]
    assert selected[:40] == [(suite, t) for suite in gen_reward.MAIN_SUITES for t in range(10)]
    assert selected[40:] == [("libero_goal_task", 2)]
    assert len(gen_reward.select_tasks("all", None, None)) == 40  # generating: the four suites only


# ----------------------------------------------------------------------------------------------------------
# --recordings: how a candidate ranks recorded successes and failures

BOWL_TO_PLATE = """
import numpy as np


def compute_reward(state, info):
    bowl, plate = state["objects"]["akita_black_bowl_1"]["pos"], state["objects"]["plate_1"]["pos"]
    return float({sign}np.linalg.norm(bowl - plate))
"""
TOWARD_PLATE, AWAY_FROM_PLATE = BOWL_TO_PLATE.format(sign="-"), BOWL_TO_PLATE.format(sign="")


def save_trajectory(path: Path, task_id: int, init_state_id: int, info: dict, states: list) -> None:
    """A recording of one trajectory through real simulator states. No policy chose its actions (random or none),
    so its tokens are zeros; what a reward file sees, the states and their success flags, is real."""
    task, steps = libero_envs.get_task(SUITE, task_id), len(states)
    recordings.Group(
        suite=SUITE,
        task_name=task.name,
        instruction=task.language,
        init_state_id=init_state_id,
        images=np.zeros((1, steps, 0, 0, 3), np.uint8),
        tokens=np.zeros((1, steps, 7), np.int64),
        log_probs=np.zeros((1, steps), np.float32),
        rewards=np.full((1, steps), np.nan, np.float32),
        mask=np.ones((1, steps), bool),
        success=np.array([states[-1]["success"]]),
        lengths=np.array([steps]),
        failed=np.array([False]),
        reward_infos=[info],
        reward_states=[states],
        reward_file=None,
        reward_sha256=None,
    ).save(path)


def bowl_on_plate_trajectory(goal_state: np.ndarray, steps: int) -> tuple:
    """(info, states) of `steps` still steps from the bowl settled on the plate: the goal holds at every one."""
    task = libero_envs.get_task(SUITE, TASK_ID)
    env = libero_envs.make_env(libero_envs.task_bddl_path(task), render=False, horizon=libero_envs.env_horizon(steps))
    try:
        initial = rewards.build_reward_state(env, libero_envs.reset_env(env, goal_state), 0, False)
        info = rewards.build_reward_info(SUITE, TASK_NAME, task.language, cli.TRAIN_MAX_STEPS[SUITE], initial)
        states = []
        for step in range(1, steps + 1):
            obs, _, done, _ = env.step(np.zeros(libero_envs.ACTION_DIM))
            states.append(rewards.build_reward_state(env, obs, step, done))
    finally:
        env.close()
    assert all(state["success"] for state in states)
    return info, states


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, bowl_on_plate):
    """A folder of recordings of task 8 from the real simulator: init states 0 and 1 after 3 random actions
    (failures), the bowl on the plate (a success), and one recording of task 0."""
    folder = tmp_path_factory.mktemp("recordings")
    states, infos, _ = gen_reward.collect_validation_states(SUITE, TASK_ID, 2, 3, 0)  # as make_args validates
    for k in range(2):  # [state after the wait steps, then after each of 3 random actions] of init state k
        save_trajectory(folder / f"failure{k}.npz", TASK_ID, k, infos[4 * k], states[4 * k + 1 : 4 * k + 4])
    save_trajectory(folder / "success.npz", TASK_ID, 0, *bowl_on_plate_trajectory(bowl_on_plate, 3))
    other_states, other_infos, _ = gen_reward.collect_validation_states(SUITE, 0, 1, 1, 0)
    save_trajectory(folder / "other_task.npz", 0, 0, other_infos[0], other_states[1:])
    return folder


def bowl_plate_returns(folder: Path, sign: float) -> dict:
    """The return of TOWARD_PLATE (sign -1) or AWAY_FROM_PLATE (+1) on each task-8 recording, by hand."""
    returns = {}
    for name in ("success", "failure0", "failure1"):
        (states,) = recordings.load_group(folder / f"{name}.npz").reward_states
        bowl_to_plate = [s["objects"]["akita_black_bowl_1"]["pos"] - s["objects"]["plate_1"]["pos"] for s in states]
        returns[name] = sign * sum(map(np.linalg.norm, bowl_to_plate))
    return returns


def test_recordings_say_whether_a_candidate_ranks_successes_above_failures(tmp_path, llm_server, recorded, capfd):
    server = llm_server("openai", [ok(fenced(TOWARD_PLATE)), ok(fenced(AWAY_FROM_PLATE))])
    args = make_args(tmp_path, server, recordings=(str(recorded),), overwrite=True)

    gen_reward.main(args)
    toward, err = output_file(tmp_path).read_text(), capfd.readouterr().err
    gen_reward.main(args)
    away = output_file(tmp_path).read_text()

    assert err.count("skipped 1 recording(s) of other tasks (libero_goal/open_the_middle_drawer_of_the_cabinet)") == 1
    for text, sign, corr, verdict in ((toward, -1, "+0.87", "ranks"), (away, 1, "-0.87", "does NOT rank")):
        returns = bowl_plate_returns(recorded, sign)
        failed = (returns["failure0"] + returns["failure1"]) / 2
        expected = (
            f"# Recordings: 3 recorded trajectories (1 succeeded, 3 files): mean return {returns['success']:.4g} "
            f"succeeded vs {failed:.4g} failed, rank correlation of return and success {corr}: {verdict} successes "
            "above failures.\n"
        )
        assert expected in text, text
    assert f"{output_file(tmp_path)} on 3 recorded trajectories" in err  # the log says it too


def test_recordings_without_a_success_cannot_check_the_ranking(tmp_path, recorded, capfd):
    output_file(tmp_path).parent.mkdir(parents=True)
    output_file(tmp_path).write_text(TOWARD_PLATE)
    failures = tuple(str(recorded / f"failure{k}.npz") for k in range(2))

    gen_reward.main(make_args(tmp_path, check=True, recordings=failures))

    err = capfd.readouterr().err
    expected = "2 recorded trajectories (0 succeeded, 2 files): the ranking of successes above failures cannot be "
    assert f"{output_file(tmp_path)} on {expected}checked: none of them succeeded" in err


def test_bad_recordings_stop_the_run_before_any_api_call(tmp_path, llm_server):
    server = llm_server("anthropic", [ok(fenced(TOWARD_PLATE))])
    garbage, empty = tmp_path / "garbage.npz", tmp_path / "empty"
    garbage.write_text("not a recording")
    empty.mkdir()
    for given, problem in (
        (tmp_path / "missing", "no such file or folder"),
        (empty, "no recorded group (.npz) there"),
        (garbage, "not a readable recording"),
    ):
        message = run_main_expecting_exit(make_args(tmp_path, server, recordings=(str(given),)))
        assert message.startswith(f"{given}: {problem}") and "\n" not in message, message
    assert server.requests == [] and not output_file(tmp_path).exists()
