"""GPU readiness without a GPU: the OpenVLA-7B-shaped model's layout, the random-weight checkpoint writer, the
update-memory check, and benchmarks/bench_gpu.py at toy size (real LIBERO, 2 envs, 3 steps)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForVision2Seq

import openvla_policy
import tgrpo
from tiny_vla.build import (
    AUTO_MAP_MODEL,
    OPENVLA_7B_PARAMETERS,
    build_into,
    empty_model,
    libero_norm_stats,
    openvla_shaped_config,
    write_random_checkpoint,
)
from tiny_vla.configuration_tiny_vla import TinyVLAConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_gpu  # noqa: E402


def test_openvla_7b_preset_has_openvla_7b_shapes():
    model = empty_model(openvla_shaped_config())  # meta device: the layout costs no memory
    num_parameters = sum(p.numel() for p in model.parameters())
    assert abs(num_parameters / OPENVLA_7B_PARAMETERS - 1) < 0.01
    assert model.config.model_type == "openvla_shaped"  # so load_vla treats it like the real checkpoint
    llama = model.language_model.config
    assert (llama.num_hidden_layers, llama.hidden_size, llama.num_attention_heads, llama.intermediate_size) == (
        32,
        4096,
        32,
        11008,
    )
    assert model.get_input_embeddings().weight.shape == (32064, 4096)
    patches = model.vision_backbone(torch.zeros(2, 6, 224, 224, device="meta"))
    assert patches.shape == (2, 256, 1024 + 1152)  # DINOv2 ViT-L/14 + SigLIP So400m/14, 16 x 16 patches
    assert model.projector(patches).shape == (2, 256, 4096)
    projector = model.projector
    assert [layer.out_features for layer in (projector.fc1, projector.fc2, projector.fc3)] == [8704, 4096, 4096]


@pytest.fixture(scope="module")
def small_fused_dir(tmp_path_factory):
    """The fused timm branch at small size (two ViT-S/14 DINOv2 towers), written in several shards."""
    config = TinyVLAConfig(
        timm_model_ids=["vit_small_patch14_reg4_dinov2.lvd142m", "vit_small_patch14_dinov2.lvd142m"],
        patch_size=14,
        norm_stats=libero_norm_stats(),
    )
    config.auto_map = AUTO_MAP_MODEL
    out = tmp_path_factory.mktemp("fused") / "vla"
    return build_into(str(out), lambda tmp: write_random_checkpoint(tmp, config, seed=0, max_shard_bytes=20 * 2**20))


def test_random_checkpoint_loads_every_weight_and_acts(small_fused_dir):
    index = json.loads(open(f"{small_fused_dir}/model.safetensors.index.json").read())
    assert len(set(index["weight_map"].values())) > 1  # sharded, so never all in memory at once
    model, info = AutoModelForVision2Seq.from_pretrained(
        small_fused_dir, trust_remote_code=True, torch_dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    layer_scale = model.vision_backbone.featurizer.blocks[0].ls1.scale  # would stay unloaded if named gamma
    torch.testing.assert_close(layer_scale, torch.full_like(layer_scale, 0.1), atol=1e-3, rtol=0)
    assert torch.all(model.language_model.model.norm.weight == 1.0)
    assert 0.015 < model.language_model.lm_head.weight.std() < 0.025

    policy = openvla_policy.load_vla(small_fused_dir, "libero_goal", device="cpu")
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    tokens, log_probs, actions = policy.act(images, "put the bowl on the plate")
    assert tokens.shape == (2, 7) and np.all((tokens >= 31744) & (tokens < 32000))
    assert np.all(np.isfinite(log_probs)) and actions.shape == (2, 7)
    fast = openvla_policy.load_vla(small_fused_dir, "libero_goal", device="cpu", fast=True)  # timm towers too
    fast_tokens, fast_log_probs, _ = fast.act(images, "put the bowl on the plate", temperature=0.0)
    np.testing.assert_array_equal(fast_tokens, policy.act(images, "put the bowl on the plate", temperature=0.0)[0])


def test_update_memory_estimate_and_advice():
    sizes = dict(num_params=7_500_000_000, param_bytes=2, lora_params=110_000_000)
    small = tgrpo.estimate_update_memory(**sizes, micro_batch_size=1, gradient_checkpointing=True)
    assert 15e9 < small < 25e9
    assert tgrpo.estimate_update_memory(**sizes, micro_batch_size=8, gradient_checkpointing=True) > small
    assert tgrpo.estimate_update_memory(**sizes, micro_batch_size=1, gradient_checkpointing=False) > small

    def problem_at(micro_batch_size, gradient_checkpointing, available_bytes):
        return tgrpo.update_memory_problem(sizes, micro_batch_size, gradient_checkpointing, available_bytes)

    assert problem_at(8, True, 1e12) is None
    problem = problem_at(16, False, 40e9)
    assert problem.startswith("--micro-batch-size 16 --gradient-checkpointing False: the update needs about")
    assert "\n" not in problem
    fits = problem.split("these fit: ")[1].split(" or ")
    assert len(fits) == 2 and fits[1].endswith("--gradient-checkpointing True")
    for advice in fits:  # every suggestion really fits
        size = int(advice.split()[1])
        checkpointing = advice.endswith("--gradient-checkpointing True")
        assert tgrpo.estimate_update_memory(**sizes, micro_batch_size=size, gradient_checkpointing=checkpointing) < 40e9
    assert "nothing fits" in problem_at(1, True, 8e9)


def test_the_update_takes_the_largest_micro_batch_that_fits():
    """Hand-computed: 15 GB of bf16 weights + 20 B x 110M LoRA parameters (fp32 master, its gradient and two AdamW
    moments, the bf16 weight and its gradient) + 0.5 GB = 17.7 GB, then 0.6 GB (checkpointing) or 2.175 GB (not) per
    sample. Bigger micro-batches first, up to 32; without checkpointing where that size fits so; a size or a setting
    the user gave is kept."""
    sizes = dict(num_params=7_500_000_000, param_bytes=2, lora_params=110_000_000)
    assert tgrpo.fitting_update_batching(sizes, 150e9) == (32, False)  # 17.7 + 32 x 2.175 = 87.3 GB
    assert tgrpo.fitting_update_batching(sizes, 80e9) == (32, True)  # without: 28 at most
    assert tgrpo.fitting_update_batching(sizes, 30e9) == (20, True)  # 17.7 + 20 x 0.6 = 29.7 GB
    assert tgrpo.fitting_update_batching(sizes, 40e9, checkpointing=False) == (10, False)  # 17.7 + 10 x 2.175 = 39.45
    assert tgrpo.fitting_update_batching(sizes, 50e9, micro_batch_size=8) == (8, False)  # 35.1 GB
    assert tgrpo.fitting_update_batching(sizes, 30e9, micro_batch_size=8) == (8, True)
    fp32 = dict(sizes, param_bytes=4)  # fp32 weights, LoRA and activations: 30 + 16 x 0.11 + 0.5 = 32.26 GB
    assert tgrpo.fitting_update_batching(fp32, 80e9, checkpointing=False) == (10, False)  # 32.26 + 10 x 4.35 = 75.76
    assert tgrpo.fitting_update_batching(sizes, 17e9) is None


def test_an_update_out_of_gpu_memory_names_the_smaller_batching_to_resume_with():
    """A GPU that runs out of memory in the update (the estimate missed, or another process took memory) stops the run
    with one line; the completed iterations are saved by the exit path, and the line says how to go on."""
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79 GiB")
    run_dir = Path("runs/libero_goal__x__1__1")

    def advice(micro_batch_size, checkpointing):
        args = tgrpo.Args(micro_batch_size=micro_batch_size, gradient_checkpointing=checkpointing)
        return tgrpo.update_out_of_memory(args, run_dir, oom)

    line = advice(30, False)
    assert line.startswith("the update ran out of GPU memory with --micro-batch-size 30 --gradient-checkpointing False")
    assert "(CUDA out of memory. Tried to allocate 2.00 GiB." in line and "\n" not in line
    assert line.endswith(f"--resume {run_dir} --micro-batch-size 30 --gradient-checkpointing True")  # checkpoint first
    assert advice(32, True).endswith(f"--resume {run_dir} --micro-batch-size 16 --gradient-checkpointing True")
    assert "nothing smaller exists" in advice(1, True)


def test_bench_gpu_refuses_what_this_machine_cannot_run(capsys):
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="needs a CUDA GPU"):
            bench_gpu.main(bench_gpu.Args())
    with pytest.raises(SystemExit, match="--device cpu runs only --model tiny"):
        bench_gpu.main(bench_gpu.Args(device="cpu"))


def test_bench_gpu_runs_at_toy_size(tiny_cache):
    args = bench_gpu.Args(
        model="tiny",
        device="cpu",
        batch_sizes=(1, 2),
        latency_repeats=1,
        micro_batch_sizes=(1, 2),
        update_samples=4,
        num_envs=2,
        max_steps=3,
    )
    report = bench_gpu.main(args)
    lines = report.splitlines()
    policy_rows = [line for line in lines if line.startswith(("| 1 |", "| 2 |"))]  # policy step at batch 1 and 2
    assert len(policy_rows) == 2 and all("| 100.0% |" in row for row in policy_rows)  # fast = eager, token for token
    assert sum(line.startswith("| off | ") for line in lines) == 2  # update at micro-batch 1, 2 (CPU: no checkpointing)
    iteration_row = lines[next(i for i, line in enumerate(lines) if line.startswith("| iteration |")) + 2]
    assert iteration_row.count("%") >= 4  # collection, simulation, policy, update
    assert "N=2, 3 steps: 6 samples" in report
    mismatch = float(report.split("mean |difference| ")[1].split()[0])
    assert mismatch < 1e-3  # the update's first ratio is 1 within 1e-3
    assert "| policy step for evaluation (base model), batch 1 |" in report  # the goals, eager beside fast
