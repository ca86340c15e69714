"""GPU benchmark of OpenVLA-7B under TGRPO: policy latency, update time and peak memory, one iteration on LIBERO.

    python benchmarks/bench_gpu.py                                # a random model of OpenVLA-7B's shapes
    python benchmarks/bench_gpu.py --model <openvla checkpoint>   # a real one
    python benchmarks/bench_gpu.py --model tiny --dtype float32 --no-libero   # graphs vs eager, exactly, in seconds
    python benchmarks/bench_gpu.py --model tiny --device cpu      # the same code at toy size (tests run this)

Time and memory depend on the shapes, not the weights, so without --model the benchmark builds a model of
OpenVLA-7B's exact shapes with random weights into --shaped-dir (15 GB, once; `python -m tiny_vla`) and loads
it through openvla_policy.load_vla like any checkpoint. It prints one markdown report: the machine; the policy step
(prefill + 6 cached decode steps) per batch size, eager beside fast (CUDA graphs), with how far their greedy tokens
and log-probs agree; the update per micro-batch size with and without gradient checkpointing (bf16 LoRA
stepped through fp32 master weights, as tgrpo.py trains: ms per sample, MFU, peak memory next to
tgrpo.estimate_update_memory); one TGRPO iteration on LIBERO
(N envs, --max-steps steps each, the update batched as tgrpo.py chooses) split into its parts; and the goals.
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import libero_envs  # noqa: E402
import openvla_policy  # noqa: E402
import rollout  # noqa: E402
import tgrpo  # noqa: E402
from openvla_policy import fast_step  # noqa: E402


@dataclass
class Args:
    model: Optional[str] = None
    """checkpoint dir, hub id or `tiny`; default: the OpenVLA-7B-shaped model in --shaped-dir (built if missing)"""
    shaped_dir: str = "~/.cache/tgrpo/openvla-7b-shaped"
    """where the OpenVLA-7B-shaped random model is looked for, and built if it is not there (15 GB)"""
    device: str = "cuda"
    """cuda; cpu runs the same code at toy size, with --model tiny only"""
    dtype: openvla_policy.DtypeChoice = "auto"
    """weights of the VLA; auto: bfloat16 on cuda, float32 on cpu (float32 on cuda: fast and eager agree exactly)"""
    suite: str = "libero_goal"
    """LIBERO suite of the instruction and of the end-to-end iteration"""
    task_id: int = 8
    """task of the instruction and of the end-to-end iteration"""
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32)
    """policy batch sizes to time (envs served by one batched policy call)"""
    latency_repeats: int = 5
    """timed policy calls per batch size, after one warm-up call"""
    micro_batch_sizes: tuple[int, ...] = (4, 8, 16, 32)
    """update micro-batch sizes to time and measure"""
    update_samples: int = 64
    """samples per timed update (time per sample does not depend on it; peak memory depends on the micro-batch)"""
    lora_rank: int = 16
    """LoRA rank of the adapter (paper: 16)"""
    num_envs: int = 4
    """N: envs of the end-to-end iteration"""
    max_steps: int = 200
    """steps per env in the end-to-end iteration (termination independent: all N run them all unless they succeed)"""
    libero: bool = True
    """run the end-to-end iteration on LIBERO (--no-libero skips it)"""
    seed: int = 0
    """seed of torch and of the random images"""


def check_device(args: Args) -> None:
    """One line, and no traceback, when this machine cannot run what was asked."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(
            "error: bench_gpu.py needs a CUDA GPU and none is visible; to check the script on a CPU, run it "
            "with --model tiny --device cpu"
        )
    if args.device == "cpu" and args.model != "tiny":
        sys.exit(f"error: --device cpu runs only --model tiny (a 7B model on a CPU takes hours), not {args.model}")


def resolve_model(args: Args) -> str:
    """--model, or the OpenVLA-7B-shaped model, built into --shaped-dir on first use."""
    if args.model is not None:
        return args.model
    path = Path(args.shaped_dir).expanduser()
    if not (path / "config.json").exists():
        from tiny_vla import build_openvla_shaped

        print(f"[bench_gpu] building the OpenVLA-7B-shaped model into {path} (15 GB, once)", flush=True)
        tick = time.perf_counter()
        build_openvla_shaped(str(path), device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()  # the drawing buffers must not count in the peaks measured below
        print(f"[bench_gpu] built in {time.perf_counter() - tick:.0f} s", flush=True)
    return str(path)


def machine_lines(policy) -> list:
    """What the numbers were measured on."""
    lines = [f"- torch {torch.__version__}"]
    if policy.device.type == "cuda":
        name = torch.cuda.get_device_name(policy.device)
        total_gb = torch.cuda.get_device_properties(policy.device).total_memory / 1e9
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.split()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            driver = "unknown"
        lines = [f"- GPU: {name}, {total_gb:.1f} GB, driver {driver}"]
        lines.append(f"- torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        lines.append(f"- device: {policy.device} ({os.cpu_count()} cores)")
    try:
        import flash_attn  # noqa: F401

        flash = "installed"
    except ImportError:
        flash = "not installed"
    attention = policy.model.language_model.config._attn_implementation
    import transformers

    lines.append(f"- transformers {transformers.__version__}; attention: {attention} (flash-attn {flash})")
    return lines


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_images(batch: int, seed: int) -> np.ndarray:
    """Policy inputs as the env workers deliver them: (B, 224, 224, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)


def time_policy_step(policy, instruction: str, batch: int, repeats: int, seed: int) -> tuple:
    """(seconds per batched policy step, peak GB during it) at this batch size, with the step `policy.fast` says."""
    images = random_images(batch, seed)
    policy.act(images, instruction)  # warm-up: kernels and allocator
    synchronize(policy.device)
    if policy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(policy.device)
    tick = time.perf_counter()
    for _ in range(repeats):
        policy.act(images, instruction)
    synchronize(policy.device)
    seconds = (time.perf_counter() - tick) / repeats
    peak = torch.cuda.max_memory_allocated(policy.device) / 1e9 if policy.device.type == "cuda" else float("nan")
    return seconds, peak


def synthetic_group(policy, instruction: str, samples: int, seed: int) -> rollout.Group:
    """A group of `samples` single-step trajectories, with actions sampled by the policy itself."""
    images = random_images(samples, seed)
    tokens, log_probs, _ = policy.act(images, instruction)
    return rollout.Group(
        suite="",
        task_name="synthetic",
        instruction=instruction,
        init_state_id=0,
        images=images[:, None],
        tokens=tokens[:, None],
        log_probs=log_probs[:, None],
        rewards=np.zeros((samples, 1), np.float32),
        mask=np.ones((samples, 1), bool),
        success=np.zeros(samples, bool),
        lengths=np.ones(samples, np.int64),
        failed=np.zeros(samples, bool),
    )


def set_gradient_checkpointing(policy, enabled: bool) -> None:
    """On the Llama of the LoRA-wrapped model only, with tgrpo.py's call (the vision towers are never checkpointed)."""
    language_model = policy.model.get_base_model().language_model
    if enabled:
        language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        language_model.gradient_checkpointing_disable()


def time_update(policy, optimizer, group, micro_batch_size: int, seed: int) -> tuple:
    """(seconds, peak allocated GB, peak reserved GB) of one tgrpo.update_policy over the group."""
    args = tgrpo.Args(micro_batch_size=micro_batch_size)
    samples = len(group.lengths)
    advantages = torch.as_tensor(np.random.default_rng(seed).standard_normal((samples, 1)), dtype=torch.float32)
    mask = torch.as_tensor(group.mask)
    # Warm-up on one micro-batch: kernels for this shape, and AdamW's moments exist from here on, as in a run.
    warm = {k: v[:micro_batch_size] if isinstance(v, np.ndarray) else v for k, v in vars(group).items()}
    warm_group = rollout.Group(**warm)
    warm = mask[:micro_batch_size]
    tgrpo.update_policy(policy, [warm_group], [advantages[:micro_batch_size]], [warm], optimizer, args, int(warm.sum()))
    synchronize(policy.device)
    if policy.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(policy.device)
    tick = time.perf_counter()
    tgrpo.update_policy(policy, [group], [advantages], [mask], optimizer, args, int(mask.sum()))
    synchronize(policy.device)
    seconds = time.perf_counter() - tick
    if policy.device.type != "cuda":
        return seconds, float("nan"), float("nan")
    allocated, reserved = torch.cuda.max_memory_allocated(policy.device), torch.cuda.max_memory_reserved(policy.device)
    return seconds, allocated / 1e9, reserved / 1e9


def compare_steps(policy, instruction: str, batch: int, seed: int) -> tuple:
    """(share of greedy tokens equal, largest |difference| of the summed log-probs where all 7 are) of the fast step
    against the eager one on the same images. In bf16 on random weights, near-tied logits can flip an argmax."""
    images = random_images(batch, seed + 1)
    policy.fast = False
    tokens, log_probs, _ = policy.act(images, instruction, temperature=0.0)
    policy.fast = True
    fast_tokens, fast_log_probs, _ = policy.act(images, instruction, temperature=0.0)
    same = (tokens == fast_tokens).all(axis=1)
    difference = np.abs(log_probs - fast_log_probs)[same].max() if same.any() else float("nan")
    return float(np.mean(tokens == fast_tokens)), float(difference)


def measure_latency(policy, instruction: str, args: Args) -> dict:
    """{batch: {eager, fast: seconds per policy step; peak: GB (fast); equal, logp: compare_steps}}."""
    results = {}
    for batch in args.batch_sizes:
        row = {}
        for step in ("eager", "fast"):
            policy.fast = step == "fast"
            row[step], row["peak"] = time_policy_step(policy, instruction, batch, args.latency_repeats, args.seed)
        row["equal"], row["logp"] = compare_steps(policy, instruction, batch, args.seed)
        results[batch] = row
    return results


LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch")  # host calls that start GPU work


def profile_step(policy, instruction: str, batch: int, seed: int) -> str:
    """What bounds one policy step, with the step `policy.fast` says: kernel launches from the host, and the GPU's
    busy time (kernels and copies) against the wall time, under torch.profiler. CUDA only."""
    from torch.profiler import ProfilerActivity, profile

    images = random_images(batch, seed)
    policy.act(images, instruction)  # graphs captured, kernels chosen
    synchronize(policy.device)
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
            tick = time.perf_counter()
            policy.act(images, instruction)
            synchronize(policy.device)
            wall = time.perf_counter() - tick
        events = profiler.key_averages()
        launches = sum(event.count for event in events if event.key.startswith(LAUNCH_CALLS))
        on_gpu = [event for event in events if str(event.device_type).endswith("CUDA")]
        busy = sum(getattr(event, "self_device_time_total", 0) for event in on_gpu) / 1e6
    except Exception as error:  # a profiler that fails must not cost the rest of the report
        return f"profile failed ({type(error).__name__}: {str(error)[:120]})"
    return f"{launches:,} launches, GPU busy {busy * 1e3:.0f} ms of {wall * 1e3:.0f} ms ({busy / wall:.0%}; profiled)"


def profile_lines(policy, instruction: str, args: Args) -> list:
    """The eager and the fast step profiled at the first batch size of 4 or more (training runs N = 4)."""
    if policy.device.type != "cuda":
        return []
    batch = next((b for b in args.batch_sizes if b >= 4), args.batch_sizes[-1])
    lines = [f"Profile of one step at batch {batch} with the adapter:"]
    for step in ("eager", "fast"):
        policy.fast = step == "fast"
        lines.append(f"- {step}: {profile_step(policy, instruction, batch, args.seed)}")
    policy.fast = True
    return ["", *lines]


def replay_lines(policy, model: str) -> list:
    """How far each captured shape's first replay was from the same step without graphs (fast_step.py checks it on
    real inputs, and keeps the graphs within REPLAY_TOLERANCE). CUDA only."""
    step = policy.fast_step
    if policy.device.type != "cuda" or step is None:
        return []
    if not step.replay_differences:
        return [f"- {model}: no shape was captured (see the warning above)"]
    return [
        f"- {model}: {len(step.replay_differences)} captured shapes, first replays at most "
        f"{max(step.replay_differences.values()):.1e} of the largest logit from the step without graphs "
        f"(kept up to {fast_step.REPLAY_TOLERANCE:.0e})"
    ]


def latency_table(base: dict, with_lora: dict) -> list:
    lines = [
        "| batch | base model ms: eager | fast | with the LoRA adapter (training) ms: eager | fast | fast ms per env "
        "(training) | greedy tokens equal (training) | max Δ log-prob (equal rows) | peak GB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, row in with_lora.items():
        eager, fast = base[batch]["eager"] * 1e3, base[batch]["fast"] * 1e3
        lines.append(
            f"| {batch} | {eager:.0f} | {fast:.0f} | {row['eager'] * 1e3:.0f} | {row['fast'] * 1e3:.0f} "
            f"| {row['fast'] * 1e3 / batch:.1f} | {row['equal']:.1%} | {row['logp']:.1e} | {row['peak']:.1f} |"
        )
    return lines


def update_flops_per_sample(policy, instruction: str) -> float:
    """Model FLOPs of one update sample: 2 per weight per token forward and 2 backward (input gradients: the frozen
    weights need no weight gradient, the LoRA ones are few), the vision side over the image patches, the language
    model over the whole sequence and its output layer at the 7 positions that predict an action token (all that
    log_prob computes); checkpointing's second forward pass is not counted (the usual MFU convention)."""
    vla = policy.model.get_base_model()
    frozen = lambda module: sum(p.numel() for p in module.parameters() if not p.requires_grad)  # noqa: E731
    inputs, lengths = policy.prepare(random_images(1, 0), instruction)
    with torch.no_grad():
        num_patches = vla.projector(vla.vision_backbone(inputs["pixel_values"])).shape[1]
    tokens = num_patches + int(lengths[0]) + openvla_policy.ACTION_DIM
    head = vla.language_model.lm_head.weight.numel()
    body = frozen(vla.language_model) - vla.get_input_embeddings().weight.numel() - head  # embeddings: a lookup
    vision = (frozen(vla.vision_backbone) + frozen(vla.projector)) * num_patches
    return 4.0 * (vision + body * tokens + head * openvla_policy.ACTION_DIM)


# Dense bf16 tensor-core peaks, TFLOPS, by a part of the GPU's name (first match; the PCIe H100 is slower).
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L40S", 362.0))


def peak_flops(device: torch.device) -> Optional[float]:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for part, tflops in PEAK_BF16_TFLOPS if part in name), None)


def update_table(policy, optimizer, instruction: str, args: Args) -> list:
    sizes = tgrpo.update_memory_sizes(policy.model)
    num_params, param_bytes, lora_params = sizes["num_params"], sizes["param_bytes"], sizes["lora_params"]
    group = synthetic_group(policy, instruction, args.update_samples, args.seed)
    flops, peak = update_flops_per_sample(policy, instruction), peak_flops(policy.device)
    masters = " stepped through fp32 masters" if param_bytes != 4 else ""
    lines = [
        f"{args.update_samples} samples per update; LoRA rank {args.lora_rank}: {lora_params / 1e6:.1f}M "
        f"{param_bytes * 8}-bit parameters{masters} on {num_params / 1e9:.2f}B frozen ones; {flops / 1e12:.1f} TFLOP "
        f"per sample; MFU against {f'{peak / 1e12:.0f} TFLOPS (dense bf16)' if peak else 'no known peak'}",
        "",
        "| gradient checkpointing | micro-batch | update s | ms per sample | MFU | peak GB (allocated) "
        "| peak GB (reserved) | estimate GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured = {}  # (checkpointing, micro-batch) -> ms per sample
    checkpointing_settings = (True, False) if policy.device.type == "cuda" else (False,)  # tgrpo: CUDA only
    for checkpointing in checkpointing_settings:
        set_gradient_checkpointing(policy, checkpointing)
        for micro_batch_size in args.micro_batch_sizes:
            estimate = tgrpo.estimate_update_memory(
                **sizes, micro_batch_size=micro_batch_size, gradient_checkpointing=checkpointing
            )
            row = f"| {'on' if checkpointing else 'off'} | {micro_batch_size} |"
            try:
                seconds, allocated, reserved = time_update(policy, optimizer, group, micro_batch_size, args.seed)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                lines.append(f"{row} out of memory | | | | | {estimate / 1e9:.1f} |")
                continue
            per_sample = seconds / args.update_samples
            measured[checkpointing, micro_batch_size] = per_sample * 1e3
            mfu = f"{flops / per_sample / peak:.0%}" if peak else "n/a"
            lines.append(
                f"{row} {seconds:.2f} | {per_sample * 1e3:.0f} | {mfu} | {allocated:.1f} | {reserved:.1f} "
                f"| {estimate / 1e9:.1f} |"
            )
    return lines, measured


def libero_iteration(policy, optimizer, args: Args) -> tuple:
    """One TGRPO iteration as tgrpo.main runs it: collect a group on LIBERO, advantages, one update with the
    micro-batch and checkpointing tgrpo.py chooses. Returns the report's lines and the measurements."""
    policy.fast_step = None  # as in a fresh run: the update's memory is chosen next to one policy step of N envs
    if policy.device.type == "cuda":
        torch.cuda.empty_cache()
    step_bytes = tgrpo.policy_step_memory(policy, args.num_envs)
    train_args = tgrpo.choose_update_batching(policy, tgrpo.Args(), step_bytes)
    set_gradient_checkpointing(policy, train_args.gradient_checkpointing)
    task = libero_envs.get_task(args.suite, args.task_id)
    reward_file = rollout.read_reward_file(args.suite, task.name)
    collect = dict(
        suite=args.suite,
        task_id=args.task_id,
        init_state_id=0,
        reward_file=reward_file,
        termination="independent",
    )
    tick = time.perf_counter()
    pool = libero_envs.EnvPool(args.num_envs, openvla_policy.preprocess_image)
    try:
        rollout.collect_group(policy, pool, max_steps=2, **collect)  # warm-up: starts the workers, builds the envs
        start_up = time.perf_counter() - tick
        group = rollout.collect_group(policy, pool, max_steps=args.max_steps, **collect)
    finally:
        pool.close()
    mask = torch.as_tensor(group.mask & ~group.failed[:, None])
    rewards = torch.as_tensor(group.rewards, dtype=torch.float32)
    tick = time.perf_counter()
    advantages = tgrpo.compute_advantages(rewards, mask, train_args.alpha_step, train_args.alpha_traj)[0]
    stats = tgrpo.update_policy(policy, [group], [advantages], [mask], optimizer, train_args, int(mask.sum()))
    synchronize(policy.device)
    update = time.perf_counter() - tick
    samples, total = int(mask.sum()), group.timing["total"] + update
    # collect_group's own split of the collection (simulation includes the workers' reward calls), then the update
    parts = {"collection": group.timing["total"], **{k: v for k, v in group.timing.items() if k != "total"}}
    parts["update"] = update
    lines = [
        f"{args.suite} task {args.task_id}, N={args.num_envs}, {args.max_steps} steps: {samples} samples; "
        f"{'fast' if policy.fast else 'eager'} policy step; tgrpo.py's choice for the update: micro-batch "
        f"{train_args.micro_batch_size}, gradient checkpointing {'on' if train_args.gradient_checkpointing else 'off'} "
        f"(the policy step keeps {step_bytes / 1e9:.1f} GB); env start-up (not counted) {start_up:.1f} s",
        "",
        "| iteration | " + " | ".join(parts) + " | env steps/s |",
        "|---:|" + "---:|" * (len(parts) + 1),
        f"| {total:.1f} s | "
        + " | ".join(f"{v:.1f} s ({v / total:.0%})" for v in parts.values())
        + f" | {samples / group.timing['total']:.1f} |",
        "",
        f"Log-probs the policy step sampled with against those the update differentiates: mean |difference| "
        f"{stats['logprob_mismatch']:.1e} per sample (the update's first ratio is exp of it, when these are the old)",
    ]
    return lines, {"seconds": total, "update ms per sample": update / max(samples, 1) * 1e3}


def main(args: Args) -> str:
    check_device(args)
    torch.manual_seed(args.seed)
    path = resolve_model(args)
    tick = time.perf_counter()
    policy = openvla_policy.load_vla(path, args.suite, args.device, args.dtype, fast=True)
    load_seconds = time.perf_counter() - tick
    num_parameters = sum(p.numel() for p in policy.model.parameters())
    instruction = libero_envs.get_task(args.suite, args.task_id).language
    report = [
        f"## bench_gpu.py: {args.model or 'OpenVLA-7B-shaped random model'} ({num_parameters / 1e9:.3f}B "
        f"parameters, loaded in {load_seconds:.0f} s)",
        "",
        *machine_lines(policy),
        "",
    ]
    print("\n".join(report), flush=True)

    base_latency = measure_latency(policy, instruction, args)  # the plain model, as evaluate.py runs it
    replays = replay_lines(policy, "base model")
    policy.model = tgrpo.add_lora(policy.model, args.lora_rank, None)  # as tgrpo.py trains it
    set_gradient_checkpointing(policy, policy.device.type == "cuda")
    optimizer = torch.optim.AdamW(tgrpo.master_weights(policy.model), lr=1e-5)
    lora_latency = measure_latency(policy, instruction, args)
    replays += replay_lines(policy, "with the adapter")
    latency_lines = latency_table(base_latency, lora_latency) + profile_lines(policy, instruction, args)
    if replays:
        latency_lines += ["", "CUDA graphs against the same step without graphs, on the first inputs of each shape:"]
        latency_lines += replays
    report += section("Policy step (prefill + 6 cached decode steps)", latency_lines)
    lines, update_ms = update_table(policy, optimizer, instruction, args)
    report += section("Update (tgrpo.update_policy)", lines)
    iteration = None
    if args.libero:
        lines, iteration = libero_iteration(policy, optimizer, args)
        report += section("One TGRPO iteration on LIBERO", lines)
    report += section("Goals", goals_table(base_latency, lora_latency, update_ms, iteration, args))
    return "\n".join(report)


def section(title: str, lines: list) -> list:
    lines = [f"### {title}", "", *lines, ""]
    print("\n".join(lines), flush=True)
    return lines


def goals_table(base: dict, with_lora: dict, update_ms: dict, iteration: Optional[dict], args: Args) -> list:
    """The goals of the speed work, eager beside fast, for what this run measured."""
    lines = ["| what | eager | fast | goal |", "|---|---:|---:|---:|"]
    for what, latency, batch, goal in (
        ("policy step while training (adapter active), batch 4", with_lora, 4, 80),
        ("policy step while training, batch 32", with_lora, 32, 250),
        ("policy step for evaluation (base model), batch 1", base, 1, 60),
    ):
        if batch in latency:
            eager, fast = latency[batch]["eager"] * 1e3, latency[batch]["fast"] * 1e3
            lines.append(f"| {what} | {eager:.0f} ms | {fast:.0f} ms | ≤ {goal} ms |")
    before = update_ms.get((True, 8), update_ms.get((False, 8)))  # micro-batch 8: the default before
    chosen = iteration["update ms per sample"] if iteration else None
    if before is not None or chosen is not None:
        cells = [f"{v:.0f} ms" if v is not None else "not run" for v in (before, chosen)]
        lines.append(
            f"| update, ms per sample (eager: micro-batch 8; fast: tgrpo.py's choice) | {' | '.join(cells)} "
            "| ≤ 40 ms |"
        )
    if iteration:
        what = f"one iteration, N = {args.num_envs}, {args.max_steps} steps"
        lines.append(f"| {what} | not run | {iteration['seconds']:.1f} s | ≤ 60 s |")
    return lines


if __name__ == "__main__":
    main(tyro.cli(Args))
