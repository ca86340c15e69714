"""GPU benchmark of OpenVLA-7B under TGRPO: policy latency, update time and peak memory, one iteration on LIBERO.

    python benchmarks/bench_gpu.py                                # a random model of OpenVLA-7B's shapes
    python benchmarks/bench_gpu.py --model <openvla checkpoint>   # a real one
    python benchmarks/bench_gpu.py --model tiny --device cpu      # the same code at toy size (tests run this)

Time and memory depend on the shapes, not the weights, so without --model the benchmark builds a model of
OpenVLA-7B's exact shapes with random weights into --shaped-dir (15 GB, once; `python -m tiny_vla`) and loads
it through openvla_policy.load_vla like any checkpoint. It prints one markdown report: the machine, the policy step
(prefill + 6 cached decode steps) per batch size, the update per micro-batch size with and without gradient
checkpointing (fp32 LoRA on the bf16 base, peak memory next to tgrpo.estimate_update_memory), and one TGRPO
iteration on LIBERO (N envs, --max-steps steps each) split into its parts.
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


@dataclass
class Args:
    model: Optional[str] = None
    """checkpoint dir, hub id or `tiny`; default: the OpenVLA-7B-shaped model in --shaped-dir (built if missing)"""
    shaped_dir: str = "~/.cache/tgrpo/openvla-7b-shaped"
    """where the OpenVLA-7B-shaped random model is looked for, and built if it is not there (15 GB)"""
    device: str = "cuda"
    """cuda; cpu runs the same code at toy size, with --model tiny only"""
    suite: str = "libero_goal"
    """LIBERO suite of the instruction and of the end-to-end iteration"""
    task_id: int = 8
    """task of the instruction and of the end-to-end iteration"""
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32)
    """policy batch sizes to time (envs served by one batched policy call)"""
    latency_repeats: int = 5
    """timed policy calls per batch size, after one warm-up call"""
    micro_batch_sizes: tuple[int, ...] = (1, 4, 8, 16)
    """update micro-batch sizes to time and measure"""
    update_samples: int = 32
    """samples per timed update (time per sample does not depend on it; peak memory depends on the micro-batch)"""
    lora_rank: int = 16
    """LoRA rank of the adapter (paper: 16)"""
    num_envs: int = 4
    """N: envs of the end-to-end iteration"""
    max_steps: int = 50
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
    """(seconds per batched policy step, peak GB during it) at this batch size."""
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


def model_sizes(policy) -> tuple:
    """(frozen parameters, bytes per frozen parameter, trainable LoRA parameters) for the memory estimate."""
    frozen = [p for p in policy.model.parameters() if not p.requires_grad]
    lora = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    return sum(p.numel() for p in frozen), frozen[0].element_size(), lora


def measure_latency(policy, instruction: str, args: Args) -> dict:
    """{batch: (seconds per policy step, peak GB)} for every --batch-sizes."""
    return {b: time_policy_step(policy, instruction, b, args.latency_repeats, args.seed) for b in args.batch_sizes}


def latency_table(base: dict, with_lora: dict) -> list:
    lines = [
        "| batch | policy step ms, base model | with the LoRA adapter (training) | ms per env (training) | peak GB |",
        "|---:|---:|---:|---:|---:|",
    ]
    for batch, (seconds, peak) in with_lora.items():
        ms = seconds * 1e3
        lines.append(f"| {batch} | {base[batch][0] * 1e3:.0f} | {ms:.0f} | {ms / batch:.1f} | {peak:.1f} |")
    return lines


def update_table(policy, optimizer, instruction: str, args: Args) -> list:
    num_params, param_bytes, lora_params = model_sizes(policy)
    group = synthetic_group(policy, instruction, args.update_samples, args.seed)
    lines = [
        f"{args.update_samples} samples per update; LoRA rank {args.lora_rank}: {lora_params / 1e6:.1f}M fp32 "
        f"parameters on {num_params / 1e9:.2f}B frozen {param_bytes * 8}-bit ones",
        "",
        "| gradient checkpointing | micro-batch | update s | ms per sample | peak GB (allocated) | peak GB (reserved) "
        "| estimate GB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    checkpointing_settings = (True, False) if policy.device.type == "cuda" else (False,)  # tgrpo: CUDA only
    for checkpointing in checkpointing_settings:
        set_gradient_checkpointing(policy, checkpointing)
        for micro_batch_size in args.micro_batch_sizes:
            sizes = (num_params, param_bytes, lora_params, micro_batch_size, checkpointing)
            estimate = tgrpo.estimate_update_memory(*sizes)
            row = f"| {'on' if checkpointing else 'off'} | {micro_batch_size} |"
            try:
                seconds, allocated, reserved = time_update(policy, optimizer, group, micro_batch_size, args.seed)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                lines.append(f"{row} out of memory | | | | {estimate / 1e9:.1f} |")
                continue
            lines.append(
                f"{row} {seconds:.2f} | {seconds / args.update_samples * 1e3:.0f} | {allocated:.1f} | {reserved:.1f} "
                f"| {estimate / 1e9:.1f} |"
            )
    set_gradient_checkpointing(policy, policy.device.type == "cuda")  # back to tgrpo's default
    return lines


def libero_iteration(policy, optimizer, args: Args) -> list:
    """One TGRPO iteration as tgrpo.main runs it: collect a group on LIBERO, advantages, one update."""
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
    train_args = tgrpo.Args()
    mask = torch.as_tensor(group.mask & ~group.failed[:, None])
    rewards = torch.as_tensor(group.rewards, dtype=torch.float32)
    tick = time.perf_counter()
    advantages = tgrpo.compute_advantages(rewards, mask, train_args.alpha_step, train_args.alpha_traj)[0]
    tgrpo.update_policy(policy, [group], [advantages], [mask], optimizer, train_args, int(mask.sum()))
    synchronize(policy.device)
    update = time.perf_counter() - tick
    samples, total = int(mask.sum()), group.timing["total"] + update
    # collect_group's own split of the collection (simulation includes the workers' reward calls), then the update
    parts = {"collection": group.timing["total"], **{k: v for k, v in group.timing.items() if k != "total"}}
    parts["update"] = update
    return [
        f"{args.suite} task {args.task_id}, N={args.num_envs}, {args.max_steps} steps: {samples} samples; "
        f"micro-batch {train_args.micro_batch_size}, gradient checkpointing "
        f"{'on' if policy.device.type == 'cuda' else 'off (CPU)'}; env start-up (not counted) {start_up:.1f} s",
        "",
        "| iteration | " + " | ".join(parts) + " | env steps/s |",
        "|---:|" + "---:|" * (len(parts) + 1),
        f"| {total:.1f} s | "
        + " | ".join(f"{v:.1f} s ({v / total:.0%})" for v in parts.values())
        + f" | {samples / group.timing['total']:.1f} |",
    ]


def main(args: Args) -> str:
    check_device(args)
    torch.manual_seed(args.seed)
    path = resolve_model(args)
    tick = time.perf_counter()
    policy = openvla_policy.load_vla(path, args.suite, args.device)
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
    policy.model = tgrpo.add_lora(policy.model, args.lora_rank, None)  # as tgrpo.py trains it
    set_gradient_checkpointing(policy, policy.device.type == "cuda")
    optimizer = torch.optim.AdamW(tgrpo.trainable_in_float32(policy.model), lr=1e-5)
    lora_latency = measure_latency(policy, instruction, args)
    sections = [
        ("Policy step (prefill + 6 cached decode steps)", lambda: latency_table(base_latency, lora_latency)),
        ("Update (tgrpo.update_policy)", lambda: update_table(policy, optimizer, instruction, args)),
    ]
    if args.libero:
        sections.append(("One TGRPO iteration on LIBERO", lambda: libero_iteration(policy, optimizer, args)))
    for title, section in sections:
        lines = [f"### {title}", "", *section(), ""]
        print("\n".join(lines), flush=True)
        report += lines
    return "\n".join(report)


if __name__ == "__main__":
    main(tyro.cli(Args))
