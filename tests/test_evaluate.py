"""evaluate.py on the real LIBERO simulator with the tiny VLA: counts, determinism, LoRA loading, bad input, and
episode recordings that rescore.py scores."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import evaluate
import libero_envs
import openvla_policy
import recordings
import rescore
from cli import UsageError

from conftest import ROOT

RAISE_EEF = ROOT / "tests" / "data" / "raise_eef.py"

SUITE, BOWL_TASK = "libero_goal", 8  # task 8: "put the bowl on the plate"
SMALL = dict(max_steps=5, camera_size=128, progress=False)


@pytest.fixture(scope="module")
def pool():
    pool = libero_envs.EnvPool(2, openvla_policy.preprocess_image, step_timeout=60.0)
    yield pool
    pool.close()


def outcomes(result: dict) -> list:
    return [(r["task_id"], r["init_state_id"], r["success"], r["length"], r["fingerprint"]) for r in result["episodes"]]


def test_cli_two_tasks_prints_the_table_and_writes_json_and_videos(tiny_cache, tmp_path):
    command = [sys.executable, "evaluate.py", "--suite", SUITE, "--model", "tiny", "--task-ids", "0", "8"]
    command += ["--trials-per-task", "2", "--num-envs", "2", "--max-steps", "3", "--camera-size", "128"]
    command += ["--output-dir", str(tmp_path), "--video", "failures", "--save-episodes"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.glob("eval__libero_goal__tiny__*")
    out, video_dir = run_dir / "results.json", run_dir / "videos"
    # The tiny VLA never solves a task in 3 steps, so every episode is a failure at the cap.
    assert "| 0 | open the middle drawer of the cabinet | 0 / 2 | 0.0 |" in result.stdout
    assert "| 8 | put the bowl on the plate | 0 / 2 | 0.0 |" in result.stdout
    assert "| | **libero_goal average** | 0 / 4 | 0.0 |" in result.stdout
    assert "PROTOCOL DEPARTURES" in result.stdout and "--max-steps 3 (protocol for libero_goal: 300)" in result.stdout
    assert "(50 trials x 10 tasks, not this run): OpenVLA SFT 79.2, TGRPO 81.0" in result.stdout
    assert "success 0/4" in result.stderr  # the progress bar's running success rate

    report = json.loads(out.read_text())
    assert report["complete"] and report["config"]["num_envs"] == 2 and report["protocol"]["seed"] == 7
    episodes = report["episodes"]
    assert [(e["task_id"], e["init_state_id"]) for e in episodes] == [(0, 0), (0, 1), (8, 0), (8, 1)]
    assert all(e["length"] == 3 and not e["success"] and e["error"] is None and e["wall_time"] > 0 for e in episodes)
    assert {e["task_name"] for e in episodes} == {"open_the_middle_drawer_of_the_cabinet", "put_the_bowl_on_the_plate"}
    summary = report["suites"][SUITE]
    assert (summary["successes"], summary["trials"]) == (0, 4) and [t["trials"] for t in summary["tasks"]] == [2, 2]
    assert "--trials-per-task 2 (protocol: 50)" in report["departures"][SUITE]
    videos = sorted(p.name for p in video_dir.glob("*.mp4"))
    assert videos == [f"libero_goal__task{t:02d}__init{i:02d}__failure.mp4" for t in (0, 8) for i in (0, 1)]
    assert all(e["video"] == str(video_dir / name) for e, name in zip(episodes, videos))
    assert all((video_dir / name).stat().st_size > 1000 for name in videos)
    names = [f"libero_goal__task{t:02d}__init{i:02d}.npz" for t in (0, 8) for i in (0, 1)]
    assert [e["recording"] for e in episodes] == [str(run_dir / "episodes" / name) for name in names]
    assert f"and episode recordings in {run_dir / 'episodes'}" in result.stdout
    group = recordings.load_group(run_dir / "episodes" / names[3])
    assert group.task_name == "put_the_bowl_on_the_plate" and group.init_state_id == 1
    assert group.tokens.shape == (1, 3, 7) and group.images.shape == (1, 3, 0, 0, 3)  # no frames: --video has them
    assert [state["step"] for state in group.reward_states[0]] == [1, 2, 3] and group.reward_infos[0]["max_steps"] == 3


def test_suite_all_prints_table1_beside_the_published_rows(tiny_cache, tmp_path, capsys):
    args = evaluate.Args(
        suite="all",
        model="tiny",
        task_ids=(0,),
        trials_per_task=1,
        num_envs=1,
        max_steps=1,
        camera_size=128,
        output_dir=str(tmp_path),
        device="cpu",
    )
    results = evaluate.main(args)
    (out,) = tmp_path.glob("eval__all__tiny__*/results.json")
    printed = capsys.readouterr().out
    assert list(results) == list(evaluate.PAPER_SUITES)
    assert "| success % | Spatial | Object | Goal | Long | Average |" in printed
    assert "| this run (protocol departures, see above) | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |" in printed
    assert "| OpenVLA SFT (published) | 84.7 | 88.4 | 79.2 | 53.7 | 76.5 |" in printed
    assert "| TGRPO (published) | 90.4 | 92.2 | 81.0 | 59.2 | 80.7 |" in printed
    report = json.loads(out.read_text())
    assert report["complete"] and report["average"] == 0.0 and len(report["episodes"]) == 4
    assert [e["suite"] for e in report["episodes"]] == list(evaluate.PAPER_SUITES)
    assert "--max-steps 1 (protocol for libero_10: 520)" in report["departures"]["libero_10"]


def test_real_success_counts_and_a_crashed_episode_is_a_reported_failure(
    tiny_policy, pool, bowl_on_plate, capfd, tmp_path
):
    init0 = libero_envs.get_init_states(SUITE, BOWL_TASK)[0]
    broken = np.zeros(3)  # the simulator raises on a state of the wrong size
    states = {BOWL_TASK: [bowl_on_plate, init0, broken, bowl_on_plate]}
    episode_dir = tmp_path / "episodes"
    result = evaluate.evaluate_suite(
        tiny_policy, SUITE, task_ids=[BOWL_TASK], pool=pool, init_states=states, episode_dir=str(episode_dir), **SMALL
    )
    episodes = result["episodes"]
    assert [e["success"] for e in episodes] == [True, False, False, True]
    assert [e["length"] for e in episodes] == [1, 5, 0, 1]  # the goal holds after the first step
    assert episodes[2]["error"].startswith("env worker crashed or hung during reset")
    assert [e["error"] is None for e in (episodes[0], episodes[1], episodes[3])] == [True] * 3
    assert (result["successes"], result["trials"], result["errors"]) == (2, 4, 1)
    assert result["tasks"][0]["errors"] == 1 and result["success_rate"] == 0.5
    assert "explicit init states" in " ".join(result["departures"])
    assert "crashed" in evaluate.format_task_table(result) and "env 0 failed" in capfd.readouterr().err
    check_episode_recordings(episodes, episode_dir)


def check_episode_recordings(episodes: list, episode_dir) -> None:
    """Each episode's recording holds what a reward file would have seen; rescore.py scores it with a reward file
    (it needs one: no file scored an evaluation) exactly as the file scores the recorded states."""
    groups = [recordings.load_group(e["recording"]) for e in episodes]
    assert [g.success[0] for g in groups] == [True, False, False, True] and [g.failed[0] for g in groups][2]
    assert [g.lengths[0] for g in groups] == [1, 5, 0, 1] and groups[2].reward_infos == [None]  # no reset: no info
    assert all(g.reward_file is None and np.isnan(g.rewards).all() for g in groups)
    assert groups[1].reward_infos[0]["max_steps"] == 5 and groups[1].reward_states[0][4]["step"] == 5
    with pytest.raises(UsageError, match="no reward file scored it .*pass one with --reward-file"):
        rescore.main(rescore.Args(recordings=(str(episode_dir),)))

    (result,) = rescore.main(rescore.Args(recordings=(str(episode_dir),), reward_file=str(RAISE_EEF))).values()
    # raise_eef.py by hand: the end effector's height now minus at the start of the episode.
    by_hand = [np.zeros((1, 0), np.float32)] * 4  # the crashed episode, which is never scored
    for k in (0, 1, 3):
        start, states = groups[k].reward_infos[0]["initial"], groups[k].reward_states[0]
        by_hand[k] = np.array([[state["eef_pos"][2] - start["eef_pos"][2] for state in states]], np.float32)
    assert all(np.array_equal(rescored, expected) for rescored, expected in zip(result["rescored"], by_hand))
    returns = [float(expected.sum()) for expected in by_hand]
    assert result["trajectories"] == 3 and result["succeeded"] == 2  # the crashed episode is left out
    assert result["return_succeeded"] == pytest.approx((returns[0] + returns[3]) / 2)
    assert result["return_failed"] == pytest.approx(returns[1])
    assert np.isnan(result["max_reward_change"]) and np.isnan(result["advantage_corr"])  # nothing was recorded


def test_results_do_not_depend_on_num_envs(tiny_policy, pool, bowl_on_plate):
    # Episodes of different lengths, so with 2 envs a worker is handed the next init state mid-way.
    init = libero_envs.get_init_states(SUITE, BOWL_TASK)
    states = {BOWL_TASK: [init[0], bowl_on_plate, init[1]]}
    with_two = evaluate.evaluate_suite(tiny_policy, SUITE, task_ids=[BOWL_TASK], pool=pool, init_states=states, **SMALL)
    with_one = evaluate.evaluate_suite(
        tiny_policy, SUITE, task_ids=[BOWL_TASK], num_envs=1, init_states=states, **SMALL
    )
    assert [e["length"] for e in with_one["episodes"]] == [5, 1, 5]
    # The fingerprint hashes every action token and the final eef and object positions.
    assert outcomes(with_one) == outcomes(with_two)


def make_lora(model, directory, perturb: bool, save_embedding_layers="auto") -> None:
    """An adapter the way tgrpo.py makes one (OpenVLA's LoRA recipe), saved with save_pretrained."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=4, lora_dropout=0.0, target_modules="all-linear", init_lora_weights="gaussian")
    peft_model = get_peft_model(model, config)
    if perturb:  # B starts at zero (a no-op adapter): move it as training would
        generator = torch.Generator().manual_seed(0)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.data = torch.randn(param.shape, generator=generator) * 0.5
    peft_model.save_pretrained(str(directory), save_embedding_layers=save_embedding_layers)


def test_lora_adapter_loads_and_changes_the_actions(tiny_policy, tmp_path):
    # Where tgrpo.py saves it: --lora accepts the run dir or the adapter dir.
    make_lora(
        openvla_policy.load_vla("tiny", SUITE, "cpu").model, tmp_path / "run" / "checkpoint" / "adapter", perturb=True
    )
    assert evaluate.lora_adapter_dir(str(tmp_path / "run")) == str(tmp_path / "run" / "checkpoint" / "adapter")
    lora_policy = evaluate.load_policy("tiny", SUITE, str(tmp_path / "run"), "cpu")
    assert type(lora_policy.model).__name__ == "PeftModel"
    images = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    base_tokens, _, _ = tiny_policy.act(images, "put the bowl on the plate", temperature=0.0)
    lora_tokens, _, lora_actions = lora_policy.act(images, "put the bowl on the plate", temperature=0.0)
    assert (base_tokens != lora_tokens).any() and lora_actions.shape == (4, 7)
    # A fresh (B = 0) adapter is a no-op: the wrapped model decodes exactly like the base model. (Saved
    # without the lm_head base weights that peft adds by default when all-linear targets lm_head.)
    noop = openvla_policy.load_vla("tiny", SUITE, "cpu").model
    make_lora(noop, tmp_path / "noop", perturb=False, save_embedding_layers=False)
    noop_policy = evaluate.load_policy("tiny", SUITE, str(tmp_path / "noop"), "cpu")
    noop_tokens, _, _ = noop_policy.act(images, "put the bowl on the plate", temperature=0.0)
    np.testing.assert_array_equal(noop_tokens, base_tokens)


def test_mismatched_lora_dirs_get_a_clear_message(tiny_cache, tmp_path):
    from tiny_vla.configuration_tiny_vla import TinyVLAConfig
    from tiny_vla.modeling_tiny_vla import TinyVLAForActionPrediction

    # Made on a different base model (a 32-wide tiny VLA): every LoRA shape differs.
    narrow = TinyVLAForActionPrediction(TinyVLAConfig(text_config={"hidden_size": 32, "intermediate_size": 64}))
    make_lora(narrow, tmp_path / "narrow", perturb=True)
    with pytest.raises(evaluate.UsageError, match=r"--lora .*narrow does not match the base model .*size mismatch"):
        evaluate.load_policy("tiny", SUITE, str(tmp_path / "narrow"), "cpu")
    # Made on the language model alone: peft would silently skip every weight; we refuse.
    make_lora(openvla_policy.load_vla("tiny", SUITE, "cpu").model.language_model, tmp_path / "llm_only", perturb=True)
    with pytest.raises(evaluate.UsageError, match=r"does not match the base model.*saved tensors match no module"):
        evaluate.load_policy("tiny", SUITE, str(tmp_path / "llm_only"), "cpu")
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "narrow").rename(tmp_path / "run" / "adapter" / "iter_10")
    with pytest.raises(evaluate.UsageError, match=r"--lora .*run: no adapter_config.json there.*run/adapter/iter_10"):
        evaluate.check_args(evaluate.Args(model="tiny", lora=(str(tmp_path / "run"),)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(suite="libero_nope"), r"--suite 'libero_nope' is unknown; choose one of libero_spatial.*or all"),
        (dict(task_ids=(3, 12)), r"--task-ids 12: libero_goal has tasks 0..9"),
        (dict(suite="all", task_ids=(10,)), r"--task-ids 10: libero_spatial has tasks 0..9"),
        (dict(trials_per_task=51), r"--trials-per-task 51: LIBERO has 50 fixed init states per task"),
        (dict(trials_per_task=0), r"--trials-per-task 0"),
        (dict(suite="all", lora=("a",)), r"--lora got 1 adapter dir\(s\) for 4 suite\(s\)"),
    ],
)
def test_bad_input_is_rejected_naming_the_flag(overrides, message):
    with pytest.raises(evaluate.UsageError, match=message):
        evaluate.check_args(evaluate.Args(model="tiny", **overrides))


def test_bad_input_on_the_command_line_is_one_line_without_traceback():
    command = [sys.executable, "evaluate.py", "--suite", "libero_goal", "--task-ids", "10", "--model", "tiny"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: --task-ids 10: libero_goal has tasks 0..9"


def test_the_api_rejects_bad_task_ids_too(tiny_policy):
    with pytest.raises(evaluate.UsageError, match="--task-ids 10"):
        evaluate.evaluate_suite(tiny_policy, SUITE, task_ids=[10], progress=False)


def test_protocol_departures_and_the_table1_layout():
    assert evaluate.protocol_departures(SUITE, list(range(10)), 50, 300, 0.0, 256, False) == []
    departures = evaluate.protocol_departures("libero_10", list(range(10)), 50, 200, 1.0, 256, False)
    assert departures == ["--max-steps 200 (protocol for libero_10: 520)", "--temperature 1.0 (protocol: 0, greedy)"]

    def suite_result(suite, wins):
        episodes = [
            {"task_id": t, "init_state_id": i, "success": i < wins, "error": None} for t in range(10) for i in range(2)
        ]
        return evaluate.summarize_suite(suite, list(range(10)), episodes, 10, 0.0, [], 1.0)

    results = {s: suite_result(s, wins) for s, wins in zip(evaluate.PAPER_SUITES, (2, 1, 1, 0))}
    table = evaluate.format_table1(results)
    assert "| success % | Spatial | Object | Goal | Long | Average |" in table
    assert "| this run | 100.0 | 50.0 | 50.0 | 0.0 | 50.0 |" in table
    assert "| OpenVLA SFT (published) | 84.7 | 88.4 | 79.2 | 53.7 | 76.5 |" in table
    assert "| TGRPO (published) | 90.4 | 92.2 | 81.0 | 59.2 | 80.7 |" in table and "51.1" in table
