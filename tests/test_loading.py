"""Loading that explains itself: the library version guard, a local checkpoint whose remote code is elsewhere,
and any checkpoint on any device (with a word about memory on the CPU)."""

import json
import re
from pathlib import Path

import pytest
import torch

import libero_envs
import openvla_policy

PRISMATIC_FILES = ("configuration_prismatic.py", "modeling_prismatic.py", "processing_prismatic.py")
REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"


def working(**changes):
    versions = {package: working[0] for package, working in openvla_policy.WORKING_VERSIONS.items()}
    return {**versions, **changes}


def test_version_guard_names_installed_and_needed_versions_and_the_fix():
    assert openvla_policy.version_problem(working()) is None
    assert (
        openvla_policy.version_problem(working(timm="0.9.16", transformers="4.40.1+cu121")) is None
    )  # upstream's timm set

    problem = openvla_policy.version_problem(working(transformers="4.50.0"))
    assert problem.startswith("transformers 4.50.0 is installed, OpenVLA's stack needs 4.40.1")
    assert "pip install -r requirements.txt" in problem and openvla_policy.ALLOW_UNTESTED_VERSIONS in problem
    assert "\n" not in problem

    problem = openvla_policy.version_problem(working(timm="1.0.3", peft=None))
    assert "timm 1.0.3 is installed, OpenVLA's stack needs 0.9.10 or 0.9.11 or 0.9.12 or 0.9.16" in problem
    assert "; peft is not installed, OpenVLA's stack needs 0.11.1." in problem
    assert "transformers" not in problem.split(".")[0]


def test_installed_versions_pass_and_match_requirements():
    openvla_policy.check_versions()  # raises if this environment is not the pinned one
    pins = dict(re.findall(r"^(transformers|timm|peft)==(\S+)", REQUIREMENTS.read_text(), re.MULTILINE))
    assert {package: working[0] for package, working in openvla_policy.WORKING_VERSIONS.items()} == pins


def checkpoint_dir(tmp_path, auto_map=None, files=(), model_type="openvla", processor_auto_map=None):
    """A checkpoint directory as downloaded: a config.json (and a preprocessor config), no weights needed."""
    directory = tmp_path / "openvla-7b-finetuned-libero-goal"
    directory.mkdir()
    config = {"model_type": model_type, **({"auto_map": auto_map} if auto_map else {})}
    (directory / "config.json").write_text(json.dumps(config))
    if processor_auto_map:
        (directory / "preprocessor_config.json").write_text(json.dumps({"auto_map": processor_auto_map}))
    for name in files:
        (directory / name).write_text("# remote code\n")
    return directory


CROSS_REPO_MAP = {
    "AutoConfig": "openvla/openvla-7b--configuration_prismatic.OpenVLAConfig",
    "AutoModelForVision2Seq": "openvla/openvla-7b--modeling_prismatic.OpenVLAForActionPrediction",
}
CROSS_REPO_PROCESSOR_MAP = {
    "AutoImageProcessor": "openvla/openvla-7b--processing_prismatic.PrismaticImageProcessor",
    "AutoProcessor": "openvla/openvla-7b--processing_prismatic.PrismaticProcessor",
}
LOCAL_MAP = {
    "AutoConfig": "configuration_prismatic.OpenVLAConfig",
    "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
}


@pytest.fixture()
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_code_in_another_repository_names_files_source_and_destination(tmp_path, empty_hub_cache):
    directory = checkpoint_dir(tmp_path, CROSS_REPO_MAP, processor_auto_map=CROSS_REPO_PROCESSOR_MAP)
    with pytest.raises(libero_envs.UsageError) as error:
        openvla_policy.resolve_checkpoint(str(directory), "libero_goal")
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        f"--model {directory}: its code lives in the hub repository openvla/openvla-7b"
    )
    assert ", ".join(PRISMATIC_FILES) in message and "https://huggingface.co/openvla/openvla-7b" in message
    assert f"huggingface-cli download openvla/openvla-7b {' '.join(PRISMATIC_FILES)}" in message
    assert f"--local-dir {directory}" in message and "`openvla/openvla-7b--` prefixes" in message
    assert "config.json, preprocessor_config.json" in message

    # Once the files are in the hub cache, transformers finds them there offline: no complaint.
    snapshot = empty_hub_cache / "models--openvla--openvla-7b" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (empty_hub_cache / "models--openvla--openvla-7b" / "refs").mkdir()
    (empty_hub_cache / "models--openvla--openvla-7b" / "refs" / "main").write_text("0123abc")
    for name in PRISMATIC_FILES:
        (snapshot / name).write_text("# remote code\n")
    assert openvla_policy.resolve_checkpoint(str(directory), "libero_goal") == (str(directory), False)


def test_missing_local_remote_code_names_the_files(tmp_path, empty_hub_cache):
    directory = checkpoint_dir(tmp_path, LOCAL_MAP, files=["configuration_prismatic.py"])
    with pytest.raises(
        libero_envs.UsageError,
        match=(
            r"the code its auto_map names \(config.json\) is not there: fetch modeling_prismatic.py from "
            r"https://huggingface.co/openvla/openvla-7b into .*openvla-7b-finetuned-libero-goal \(`huggingface-cli "
            r"download openvla/openvla-7b modeling_prismatic.py --local-dir "
        ),
    ):
        openvla_policy.resolve_checkpoint(str(directory), "libero_goal")
    (directory / "modeling_prismatic.py").write_text("# remote code\n")
    assert openvla_policy.resolve_checkpoint(str(directory), "libero_goal") == (str(directory), False)


def test_a_config_without_auto_map_for_an_unknown_model_type_is_explained(tmp_path):
    directory = checkpoint_dir(tmp_path)
    with pytest.raises(
        libero_envs.UsageError,
        match=(
            r"config.json has model_type 'openvla', which transformers does not know, and no auto_map .* "
            r"configuration_prismatic.py modeling_prismatic.py processing_prismatic.py and their auto_map from "
            r"openvla/openvla-7b"
        ),
    ):
        openvla_policy.resolve_checkpoint(str(directory), "libero_goal")


def test_any_checkpoint_loads_on_the_cpu_and_a_large_one_gets_a_memory_warning(tiny_cache, capsys):
    path, is_tiny = openvla_policy.resolve_checkpoint("tiny", "libero_goal")
    policy = openvla_policy.load_vla(path, "libero_goal", device="cpu")
    num_parameters = sum(p.numel() for p in policy.model.parameters())
    assert openvla_policy.stored_parameter_count(path) == num_parameters  # read from the safetensors header alone
    assert "warning" not in capsys.readouterr().out  # 5M parameters: nothing to say

    warning = openvla_policy.cpu_memory_warning(7_541_237_184, torch.float32)
    assert warning.startswith("[openvla_policy] warning: 7.54B parameters in float32 on the CPU take about 30 GB")
    assert "15 GB" in openvla_policy.cpu_memory_warning(7_541_237_184, torch.bfloat16)
    assert openvla_policy.cpu_memory_warning(num_parameters, torch.float32) is None
