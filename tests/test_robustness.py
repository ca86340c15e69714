"""LIBERO-PRO perturbation suites: the instruction the policy gets, unrunnable suites, the robustness table,
training on a perturbation with the base suite's reward file, and the reward prompt of a changed task."""

import json
import subprocess
import sys

import pytest

import cli
import evaluate
import libero_envs
import openvla_policy
import rewards
import rollout
import tgrpo

from conftest import ROOT

SMALL = dict(max_steps=2, camera_size=128)


@pytest.fixture(scope="module")
def pool():
    pool = libero_envs.EnvPool(1, openvla_policy.preprocess_image, step_timeout=60.0)
    yield pool
    pool.close()


class RecordingPolicy:
    """The real tiny VLA, remembering every instruction it is asked to act on."""

    def __init__(self, policy):
        self.policy, self.instructions = policy, []

    def act(self, images, instruction, temperature):
        self.instructions.append(instruction)
        return self.policy.act(images, instruction, temperature)


@pytest.mark.parametrize(
    "suite, instruction",
    [
        ("libero_goal", "open the middle drawer of the cabinet"),  # OpenVLA's protocol: task.language
        ("libero_goal_lan", "open the cabinet’s middle drawer"),  # the BDDL's paraphrase
        ("libero_goal_task", "open the bottom drawer of the cabinet"),  # the BDDL's new task
        ("libero_goal_swap", "open the middle drawer of the cabinet"),  # as clean: only the positions change
    ],
)
def test_the_policy_receives_the_perturbed_instruction(tiny_policy, pool, suite, instruction):
    # The perturbation suites keep the base task's name and task.language: the perturbed wording lives in the BDDL.
    assert libero_envs.get_task(suite, 0).language == "open the middle drawer of the cabinet"
    policy = RecordingPolicy(tiny_policy)
    init = libero_envs.get_init_states(suite, 0)[:1]
    evaluate.evaluate_suite(policy, suite, task_ids=[0], pool=pool, init_states={0: init}, progress=False, **SMALL)
    assert set(policy.instructions) == {instruction} and len(policy.instructions) == 2


def test_object_and_swap_bddls_keep_the_clean_wording_so_they_get_the_clean_instruction():
    from libero.libero.envs.bddl_utils import get_problem_info

    def bddl_language(suite, task_id):
        return get_problem_info(libero_envs.task_bddl_path(libero_envs.get_task(suite, task_id)))[
            "language_instruction"
        ]

    for suite in ("libero_goal", "libero_spatial", "libero_object", "libero_10"):
        for key in ("object", "swap"):
            assert [bddl_language(f"{suite}_{key}", t) for t in range(10)] == [
                bddl_language(suite, t) for t in range(10)
            ]


@pytest.mark.parametrize("suite", ["libero_goal_env", "libero_spatial_temp", "libero_goal_semantic_ood"])
def test_suites_this_distribution_cannot_run_are_rejected_naming_the_missing_files(suite):
    with pytest.raises(evaluate.UsageError) as error:
        evaluate.check_args(evaluate.Args(suite=suite, model="tiny"))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"--suite {suite}: this LIBERO distribution cannot run it")
    assert f"bddl_files/{suite}/" in message and "libero_goal_swap" in message  # a missing file; the runnable list


def test_a_suite_without_its_assets_is_rejected_naming_them():
    with pytest.raises(evaluate.UsageError, match=r"--suite libero_goal_with_red_stick: .*red_sticker\.xml"):
        evaluate.check_args(evaluate.Args(suite="libero_goal_with_red_stick", model="tiny"))


def test_perturbation_suites_run_under_their_base_suite_protocol():
    assert len(cli.PERTURBED_SUITES) == 16 and set(cli.PERTURBED_SUITES) <= set(cli.SUITES)
    assert cli.EVAL_MAX_STEPS["libero_10_swap"] == 520 and cli.TRAIN_MAX_STEPS["libero_goal_task"] == 200
    assert openvla_policy.default_checkpoint("libero_goal_lan") == "openvla/openvla-7b-finetuned-libero-goal"
    assert evaluate.protocol_departures("libero_goal_swap", list(range(10)), 50, 300, 0.0, 256, False) == []


def test_robustness_table_on_one_task(tiny_cache, tmp_path, capsys):
    args = evaluate.Args(
        suite="libero_goal",
        robustness=True,
        model="tiny",
        task_ids=(0,),
        trials_per_task=1,
        num_envs=1,
        output_dir=str(tmp_path),
        device="cpu",
        save_episodes=True,
        **SMALL,
    )
    results = evaluate.main(args)
    printed = capsys.readouterr().out
    assert list(results) == evaluate.robustness_suites("libero_goal")
    (episode_dir,) = tmp_path.glob("eval__libero_goal-robustness__tiny__*/episodes/base")  # each model's apart
    assert sorted(p.name for p in episode_dir.iterdir()) == [f"{s}__task00__init00.npz" for s in sorted(results)]
    assert "| model | clean | lan | object | swap | task | drop from clean |" in printed
    assert "| base | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |" in printed
    assert "| OpenVLA (published, LIBERO-PRO) | 98.0 | 98.0 | 96.0 | 0.0 | 0.0 | 49.5 |" in printed
    (out,) = tmp_path.glob("eval__libero_goal-robustness__tiny__*/results.json")
    report = json.loads(out.read_text())
    assert report["complete"] and [e["suite"] for e in report["episodes"]] == list(results)
    assert {e["model"] for e in report["episodes"]} == {"base"} and len(report["robustness"]["rows"]) == 1
    assert report["suites"]["libero_goal_lan"]["tasks"][0]["instruction"] == "open the cabinet’s middle drawer"


def test_robustness_rows_put_base_and_adapter_side_by_side():
    def result(suite, model, rate):
        return {"suite": suite, "model": model, "success_rate": rate, "departures": []}

    rates = {"clean": 0.8, "lan": 0.7, "object": 0.6, "swap": 0.1, "task": 0.0}
    results = {}
    for model, shift in (("base", 0.0), ("base+lora", 0.1)):
        for suite, key in zip(evaluate.robustness_suites("libero_goal"), rates):
            results[suite + model[4:]] = result(suite, model, rates[key] + shift)
    table = evaluate.format_robustness_table(results, departed=False)
    assert "| base | 80.0 | 70.0 | 60.0 | 10.0 | 0.0 | 45.0 |" in table
    assert "| base+lora | 90.0 | 80.0 | 70.0 | 20.0 | 10.0 | 45.0 |" in table
    assert "LIBERO-PRO README" in table


def test_robustness_needs_a_clean_suite():
    with pytest.raises(evaluate.UsageError, match=r"--robustness --suite libero_goal_swap: pass a clean suite"):
        evaluate.check_args(evaluate.Args(suite="libero_goal_swap", robustness=True, model="tiny"))


def test_training_on_swap_uses_the_base_reward_file_and_task_needs_its_own(tiny_cache, tmp_path, capsys):
    args = tgrpo.Args(
        exp_name="swap",
        seed=0,
        model="tiny",
        device="cpu",
        suite="libero_goal_swap",
        task_ids=(8,),
        num_envs=2,
        max_steps=2,
        camera_size=128,
        num_iterations=1,
        save_every=0,
        video_every=0,
        eval_every=0,
        output_dir=str(tmp_path),
    )
    tgrpo.main(args)
    printed = capsys.readouterr().out
    assert "libero_goal_swap task(s) 8 keep the goal predicates of libero_goal: using libero_goal's reward" in printed
    # The changed task has another goal: the base file would score the wrong one, so the run names the command.
    fix = "python gen_reward.py --suite libero_goal_task --task-ids 8"
    with pytest.raises(rewards.RewardFileError, match=rf"no reward file at .*libero_goal_task.*{fix}.*does not serve"):
        rollout.read_reward_files("libero_goal_task", [8])


def test_gen_reward_dry_run_shows_the_changed_goal_of_a_task_suite():
    command = [sys.executable, "gen_reward.py", "--dry-run", "--suite", "libero_goal_task", "--task-ids", "0"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    prompt = result.stdout
    assert 'instruction: "open the bottom drawer of the cabinet"' in prompt
    assert "(:language open the bottom drawer of the cabinet)" in prompt
    assert "(Open wooden_cabinet_1_bottom_region)" in prompt and "wooden_cabinet_1_middle_region))" not in prompt
