"""TGRPO: trajectory-wise group relative policy optimization of an OpenVLA LoRA adapter on LIBERO.

    python tgrpo.py --suite libero_goal --alpha-step 0.3
    python tgrpo.py --resume runs/<run_name>

Each iteration: N envs start from one init state of one task, the policy samples a trajectory in each,
a dense reward file scores every step, and the advantage fuses a step-level and a trajectory-level
comparison across the N trajectories (`compute_advantages`). The loss is -mean(Adv * log pi).
Paper: arXiv 2506.08440. The algorithm and its defaults: README, "The algorithm".
"""

import errno
import json
import os
import random
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, Optional

import imageio
import numpy as np
import torch
import tyro
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import load_peft_weights, set_peft_model_state_dict
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import evaluate
import libero_envs
import openvla_policy
import rewards
import rollout
from libero_envs import UsageError


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the sampling (python, numpy, torch); fixture placements follow the task's sequence (README, "Conventions")"""
    torch_deterministic: bool = True
    """sets torch.backends.cudnn.deterministic"""
    track: bool = False
    """log to Weights and Biases as well (needs `pip install wandb`)"""
    wandb_project_name: str = "tgrpo"
    """the wandb project"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team)"""

    suite: libero_envs.Suite = "libero_goal"
    """LIBERO suite (libero_10 is "Long")"""
    task_ids: Optional[tuple[int, ...]] = None
    """tasks to train on, visited in turn (default: every task of the suite)"""
    model: Optional[str] = None
    """the VLA: checkpoint dir, hub id or `tiny` (built locally); default: OpenVLA-7B fine-tuned on the suite"""
    reward_file: Optional[str] = None
    """one reward file for every task, instead of rewards/<suite>/<task_name>.py"""
    device: Optional[str] = None
    """torch device (default: cuda if available, else cpu; any model runs on either, a 7B one slowly on cpu)"""
    dtype: openvla_policy.DtypeChoice = "auto"
    """base weights of the VLA (the LoRA weights train in float32); auto: bfloat16 on cuda, float32 on cpu"""

    num_iterations: int = 300
    """groups to collect and train on (not reported by the paper; 30 per task of a 10-task suite)"""
    num_envs: int = 4
    """N: trajectories per group, all from the same init state (paper: 4; its ablation: 2, 4, 8)"""
    max_steps: Optional[int] = None
    """step cap per trajectory; default: the suite's training cap (paper: 200; 520 for libero_10, whose demos run to 505)"""
    termination: Literal["first-success", "independent"] = "first-success"
    """first-success: all N stop when one succeeds (paper); independent: each stops at its own success"""
    temperature: float = 1.0
    """sampling temperature of the 256 action-token logits (not reported; peers use 1.0-1.6)"""

    alpha_step: float = 0.3
    """weight of the step-level advantage S (paper: 0.3)"""
    alpha_traj: float = 0.7
    """weight of the trajectory-level advantage T (paper: 0.7)"""
    learning_rate: float = 1e-5
    """AdamW learning rate of the LoRA parameters (paper: 1e-5)"""
    lora_rank: int = 16
    """LoRA rank (paper: 16)"""
    lora_alpha: Optional[int] = None
    """LoRA alpha (not reported; default min(rank, 16) as in OpenVLA's fine-tuning)"""
    micro_batch_size: int = 8
    """(step) samples per forward/backward pass; gradients are accumulated over the whole group"""
    max_grad_norm: float = 1.0
    """gradient norm clip"""
    update_epochs: int = 1
    """passes over each group; above 1 the PPO ratio clipping becomes active"""
    clip_coef: float = 0.2
    """PPO ratio clip (only matters with --update-epochs above 1)"""
    kl_coef: float = 0.0
    """weight of the KL penalty toward the base policy (the adapter disabled)"""
    gradient_checkpointing: bool = True
    """recompute activations in the backward pass on CUDA (saves most activation memory)"""

    camera_size: int = 256
    """agentview render size in pixels"""
    step_timeout: float = 60.0
    """seconds an env step may take before its worker counts as hung and is replaced"""
    reward_cpu_seconds: float = 5.0
    """CPU seconds one reward call may use before the run stops (the call runs confined in the env worker)"""
    reward_memory_mb: int = 1024
    """memory (MB) one reward call may allocate before the run stops"""
    save_every: int = 10
    """write a checkpoint every this many iterations (and on Ctrl-C or an error)"""
    eval_every: int = 0
    """evaluate the adapter on the suite every this many iterations (0: never)"""
    eval_trials_per_task: int = 10
    """trials per task in periodic evaluations (the official protocol uses 50)"""
    eval_max_steps: Optional[int] = None
    """step cap of periodic evaluations (default: the suite's protocol cap)"""
    video_every: int = 25
    """save one trajectory of the group as mp4 every this many iterations (0: never)"""
    resume: Optional[str] = None
    """continue the run in this directory (runs/<run_name>): its arguments are restored from the checkpoint"""
    output_dir: str = "runs"
    """where a run's outputs go: <output-dir>/<run name>/"""


def compute_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, alpha_step: float, alpha_traj: float, eps: float = 1e-8
):
    """TGRPO's advantage for one group of N trajectories: (fused, step-level S, trajectory-level T).

    S[i, t] is the z-score of R[i, t] across the trajectories that exist at step t; T[i] is the z-score of
    the return G[i] = sum_t R[i, t] across the N trajectories. fused = alpha_step * S + alpha_traj * T, shape
    (N, T); masked-out steps are 0, and wherever the compared values are all equal (or only one exists) the
    z-score is 0, never NaN.

    The std is the biased one (divide by n): the N trajectories are the whole population being ranked,
    not a sample of a larger one, and it stays defined at n = 1 (GRPO implementations differ here;
    with N = 4 the unbiased std is 15% larger, which only rescales the advantage).
    """
    weight = mask.to(rewards.dtype)
    count = weight.sum(0)
    mean = (rewards * weight).sum(0) / count.clamp(min=1)
    std = (((rewards - mean) ** 2 * weight).sum(0) / count.clamp(min=1)).sqrt()
    spread = torch.where(mask, rewards, -torch.inf).amax(0) - torch.where(mask, rewards, torch.inf).amin(0)
    step = torch.where(mask & (spread > 0), (rewards - mean) / (std + eps), 0.0)

    returns, exists = (rewards * weight).sum(1), mask.any(1)
    n = exists.sum().clamp(min=1)
    mean_return = returns[exists].sum() / n
    std_return = (((returns - mean_return) ** 2)[exists].sum() / n).sqrt()
    tied = returns[exists].numel() < 2 or bool(returns[exists].max() == returns[exists].min())
    traj = torch.zeros_like(returns) if tied else torch.where(exists, (returns - mean_return) / (std_return + eps), 0.0)

    fused = torch.where(mask, alpha_step * step + alpha_traj * traj[:, None], 0.0)
    return fused, step, traj


def policy_loss(logp, old_logp, advantages, clip_coef):
    """Per-sample TGRPO loss. With old_logp = logp.detach() the ratio is 1 and this is -Adv * log pi."""
    ratio = torch.exp(logp - old_logp)
    return -torch.min(ratio * advantages, ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages), ratio


def kl_to_base(logp, base_logp):
    """Non-negative unbiased KL(pi || base) estimate per sample (the k3 estimator used by GRPO)."""
    log_ratio = base_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def add_lora(model, rank: int, alpha: Optional[int]):
    """OpenVLA's LoRA recipe: every linear layer, no dropout, gaussian init; base weights stay frozen."""
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else min(rank, 16),
        lora_dropout=0.0,
        target_modules="all-linear",
        init_lora_weights="gaussian",
    )
    return get_peft_model(model, config)


def trainable_in_float32(model) -> list:
    # PEFT creates LoRA weights in the base dtype; lr-1e-5 steps vanish in bf16 rounding, so keep them fp32.
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    return params


def schedule(iteration: int, task_ids: list, num_init_states: int = 50) -> tuple:
    """(task_id, init_state_id, visit) of an iteration: cycle through the tasks, then the init states.

    `visit` (how many times the task came before) picks the fixture placement, as the episode number does in
    evaluation: the 50 first visits of a task see exactly the (init state, placement) pairs evaluation sees.
    """
    visit = iteration // len(task_ids)
    return task_ids[iteration % len(task_ids)], visit % num_init_states, visit


def update_policy(policy, group, advantages: torch.Tensor, mask: torch.Tensor, optimizer, args: Args) -> dict:
    """One or more passes over the valid steps (mask), with micro-batches and gradient accumulation."""
    steps = torch.nonzero(mask).tolist()
    old_logp = torch.zeros(len(steps))
    stats = {k: 0.0 for k in ("loss", "policy_loss", "kl_to_base", "approx_kl", "clipfrac", "grad_norm")}
    policy.model.train()
    for epoch in range(args.update_epochs):
        order = torch.randperm(len(steps)).tolist()
        optimizer.zero_grad(set_to_none=True)
        epoch_stats = {k: 0.0 for k in stats}
        for start in range(0, len(order), args.micro_batch_size):
            batch = order[start : start + args.micro_batch_size]
            rows, cols = zip(*(steps[k] for k in batch))
            images, tokens = group.images[list(rows), list(cols)], group.tokens[list(rows), list(cols)]
            logp = policy.log_prob(images, group.instruction, tokens, args.temperature)
            if epoch == 0:  # the policy has not moved yet: these are the old log-probs, ratio exactly 1
                old_logp[batch] = logp.detach().float().cpu()
            adv = advantages[list(rows), list(cols)].to(logp.device)
            loss, ratio = policy_loss(logp, old_logp[batch].to(logp.device), adv, args.clip_coef)
            pg_loss = loss.sum() / len(steps)
            epoch_stats["policy_loss"] += pg_loss.item()
            if args.kl_coef > 0:
                with torch.no_grad(), policy.model.disable_adapter():
                    base_logp = policy.log_prob(images, group.instruction, tokens, args.temperature)
                kl = kl_to_base(logp, base_logp).sum() / len(steps)
                loss_total = pg_loss + args.kl_coef * kl
                epoch_stats["kl_to_base"] += kl.item()
            else:
                loss_total = pg_loss
            loss_total.backward()
            with torch.no_grad():
                log_ratio = torch.log(ratio)
                epoch_stats["approx_kl"] += ((ratio - 1) - log_ratio).sum().item() / len(steps)
                epoch_stats["clipfrac"] += ((ratio - 1).abs() > args.clip_coef).float().sum().item() / len(steps)
            epoch_stats["loss"] += loss_total.item()
        params = [p for p in policy.model.parameters() if p.requires_grad]
        epoch_stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm).item()
        optimizer.step()
        stats = epoch_stats
    policy.model.eval()
    # Teacher-forced vs sampling log-probs: ~1e-6 in fp32; in bf16 it shows how far the two numerics drift.
    stats["logprob_mismatch"] = float(np.abs(old_logp.numpy() - group.log_probs[mask.numpy()]).mean()) if steps else 0.0
    return stats


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: <run>/checkpoint is replaced by a swap through checkpoint.tmp and checkpoint.old, and a
# checkpoint is complete exactly when its trainer_state.json (written last) parses.

CHECKPOINT_NAMES = ("checkpoint", "checkpoint.tmp", "checkpoint.old")
# Flags a resumed run may change: they do not alter what is learned (micro-batching only regroups the sums).
SAFE_TO_CHANGE_ON_RESUME = set(
    "num_iterations save_every eval_every eval_trials_per_task eval_max_steps video_every track wandb_project_name "
    "wandb_entity step_timeout micro_batch_size gradient_checkpointing device dtype output_dir resume reward_cpu_seconds "
    "reward_memory_mb".split()
)


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


def write_checkpoint_files(directory: Path, model, optimizer, trainer_state: dict, rng: dict) -> None:
    directory.mkdir(parents=True)
    # LoRA weights only: PEFT would add the full embeddings and lm_head (0.5 GB for 7B) because all-linear
    # adapts lm_head, but the base copies never change.
    model.save_pretrained(str(directory / "adapter"), save_embedding_layers=False)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(rng, directory / "rng.pt")
    for path in [*directory.rglob("*.safetensors"), directory / "optimizer.pt", directory / "rng.pt"]:
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    with open(directory / "trainer_state.json", "w") as handle:  # last: its presence marks the checkpoint complete
        handle.write(json.dumps(trainer_state, indent=2))
        handle.flush()
        os.fsync(handle.fileno())


def save_checkpoint(run_dir: Path, model, optimizer, trainer_state: dict, rng: dict) -> Path:
    """Write run_dir/checkpoint so that a crash at any instant leaves a complete one under some name."""
    final, tmp, old = (run_dir / name for name in CHECKPOINT_NAMES)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_checkpoint_files(tmp, model, optimizer, trainer_state, rng)
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError from its zip writer
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


def read_trainer_state(directory: Path) -> Optional[dict]:
    try:
        return json.loads((directory / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None


def find_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run, under whichever name a crash left it, renamed to `checkpoint`."""
    states = {run_dir / name: read_trainer_state(run_dir / name) for name in CHECKPOINT_NAMES}
    complete = [(state["iteration"], directory) for directory, state in states.items() if state is not None]
    if not complete:
        raise UsageError(
            f"--resume {run_dir}: no complete checkpoint there (looked for {', '.join(CHECKPOINT_NAMES)}). "
            "Pass a runs/<run_name> directory written by tgrpo.py, or start a new run without --resume"
        )
    _, newest = max(complete, key=lambda item: item[0])
    final = run_dir / "checkpoint"
    if newest != final:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(newest, final)
    for name in CHECKPOINT_NAMES[1:]:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    return final


def resumed_args(args: Args, saved_args: dict, run_dir: Path) -> Args:
    """The run's own arguments; flags the user changed from their defaults override only where that is safe."""
    defaults = asdict(Args())
    merged = {}
    for field in fields(Args):
        saved, given = saved_args.get(field.name, defaults[field.name]), getattr(args, field.name)
        saved = tuple(saved) if isinstance(saved, list) else saved
        merged[field.name] = saved
        if given == defaults[field.name] or given == saved:
            continue
        if field.name not in SAFE_TO_CHANGE_ON_RESUME:
            flag = "--" + field.name.replace("_", "-")
            raise UsageError(
                f"--resume {run_dir}: the run was trained with {flag} {saved}, not {given}; that cannot change "
                f"mid-run. Resume without {flag}, or start a new run"
            )
        merged[field.name] = given
    merged["resume"] = str(run_dir)
    return Args(**merged)


def damaged(path: Path, error: Exception) -> UsageError:
    reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:150]}"
    return UsageError(
        f"the checkpoint file {path} is damaged ({reason}); restore it from a backup, or start a new run without --resume"
    )


def read_checkpoint_files(checkpoint: Path) -> dict:
    """Optimizer and RNG states, and the adapter's files checked, before any model loads."""
    from safetensors import safe_open

    loaded = {}
    for name in ("optimizer.pt", "rng.pt"):
        try:
            loaded[name] = torch.load(checkpoint / name, weights_only=False)
        except Exception as error:
            raise damaged(checkpoint / name, error) from None
    for path, check in (
        (checkpoint / "adapter" / "adapter_config.json", lambda f: json.loads(f.read_text())),
        (checkpoint / "adapter" / "adapter_model.safetensors", lambda f: safe_open(str(f), "pt").keys()),
    ):
        try:
            check(path)
        except Exception as error:
            raise damaged(path, error) from None
    return loaded


def warn_changed_rewards(saved_hashes: dict, reward_files: dict) -> None:
    for task_id, reward_file in reward_files.items():
        before = saved_hashes.get(str(task_id))
        if before is not None and before != reward_file.sha256:
            print(
                f"[tgrpo] warning: {reward_file.path} changed since the checkpoint; the run continues with the new one"
            )


@contextmanager
def finish_before_interrupt():
    """Ctrl-C waits for the block to end, so an optimizer step is never half applied; a second one aborts."""
    interrupted = []

    def handler(signum, frame):
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(signum)
        print("\n[tgrpo] Ctrl-C: finishing this update, then saving (press Ctrl-C again to stop without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------------------
# Input checks: every one before any model or env loads


def check_args(args: Args) -> None:
    """Reject input that cannot work, naming the flag, the value and the fix."""
    problems = [
        (args.num_envs < 2, "--num-envs", "a group comparison needs at least 2 trajectories"),
        (args.alpha_step < 0, "--alpha-step", "the advantage weights must be >= 0 (paper: 0.3)"),
        (args.alpha_traj < 0, "--alpha-traj", "the advantage weights must be >= 0 (paper: 0.7)"),
        (args.alpha_step == 0 and args.alpha_traj == 0, "--alpha-step", "with --alpha-traj 0 every advantage is 0"),
        (args.temperature <= 0, "--temperature", "sampling needs a temperature > 0 (greedy samples learn nothing)"),
        (args.max_steps is not None and args.max_steps < 1, "--max-steps", "a trajectory needs at least 1 step"),
        (args.micro_batch_size < 1, "--micro-batch-size", "use 1 or more"),
        (args.lora_rank < 1, "--lora-rank", "use 1 or more (paper: 16)"),
        (args.lora_alpha is not None and args.lora_alpha <= 0, "--lora-alpha", "use a positive value"),
        (args.learning_rate <= 0, "--learning-rate", "use a positive value (paper: 1e-5)"),
        (args.num_iterations < 1, "--num-iterations", "use 1 or more"),
        (args.update_epochs < 1, "--update-epochs", "use 1 or more"),
        (args.step_timeout <= 0, "--step-timeout", "use a positive number of seconds"),
        (args.reward_cpu_seconds <= 0, "--reward-cpu-seconds", "use a positive number of seconds"),
        (args.reward_memory_mb < 64, "--reward-memory-mb", "use at least 64"),
        (args.save_every < 0, "--save-every", "use 0 (never) or a positive period"),
        (args.eval_every < 0, "--eval-every", "use 0 (never) or a positive period"),
        (args.video_every < 0, "--video-every", "use 0 (never) or a positive period"),
        (not 1 <= args.eval_trials_per_task <= 50, "--eval-trials-per-task", "LIBERO has 50 init states: use 1..50"),
    ]
    for failed, flag, fix in problems:
        if failed:
            raise UsageError(f"{flag} {getattr(args, flag[2:].replace('-', '_'))}: {fix}")
    for task_id in selected_task_ids(args):
        libero_envs.get_task(args.suite, task_id)
    rollout.check_device(args.device)
    openvla_policy.resolve_checkpoint(args.model, args.suite)


def selected_task_ids(args: Args) -> list:
    return list(args.task_ids) if args.task_ids else list(range(libero_envs.get_suite(args.suite).n_tasks))


def prepare_run_dir(args: Args) -> Path:
    """The run directory, created and proven writable before anything slow happens."""
    run_dir = (
        Path(args.resume)
        if args.resume
        else Path(args.output_dir) / f"{args.suite}__{args.exp_name}__{args.seed}__{int(time.time())}"
    )
    flag = "--resume" if args.resume else "--output-dir"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        where = args.resume or args.output_dir
        raise UsageError(
            f"{flag} {where}: cannot write to {run_dir} ({error.strerror}); choose a writable directory"
        ) from None
    return run_dir


def log_iteration(writer, iteration: int, group, advantage_stats: dict, stats: dict, timing: dict, lr: float):
    returns = group.returns[~group.failed] if (~group.failed).any() else group.returns
    scalars = {
        "charts/success_rate": group.success.mean(),
        "charts/return_mean": returns.mean(),
        "charts/return_min": returns.min(),
        "charts/return_max": returns.max(),
        "charts/episode_length": group.lengths.mean(),
        "charts/env_crashes": group.failed.sum(),
        "charts/learning_rate": lr,
        "charts/SPS": group.mask.sum() / timing["iteration"],
        **{f"advantages/{k}": v for k, v in advantage_stats.items()},
        **{f"losses/{k}": v for k, v in stats.items()},
        **{f"time/{k}": timing[k] for k in ("simulation", "policy", "update")},
    }
    for name, value in scalars.items():
        writer.add_scalar(name, float(value), iteration)
    return scalars


def save_video(run_dir: Path, group, iteration: int) -> None:
    """The first trajectory of the group, as the policy saw it."""
    path = run_dir / "videos" / f"iter{iteration:05d}_{group.task_name}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(group.images[0, : max(1, group.lengths[0])])
    imageio.mimwrite(path, frames, fps=libero_envs.CONTROL_FREQ, macro_block_size=1)


def run_periodic_eval(policy, pool, args: Args, task_ids: list, writer, iteration: int) -> None:
    # Greedy: it draws no random numbers, so the training RNG stream is the same with or without it.
    result = evaluate.evaluate_suite(
        policy,
        args.suite,
        task_ids=task_ids,
        trials_per_task=args.eval_trials_per_task,
        pool=pool,
        max_steps=args.eval_max_steps,
        camera_size=args.camera_size,
        progress=False,
    )
    writer.add_scalar("eval/success_rate", result["success_rate"], iteration)
    print(f"[tgrpo] eval at iteration {iteration}: {result['success_rate']:.1%} over {len(task_ids)} tasks")


def load_trainable_policy(args: Args, checkpoint: Optional[Path]):
    """The VLA with a trainable LoRA adapter (new, or the checkpoint's) and its AdamW optimizer."""
    policy = openvla_policy.load_vla(args.model, args.suite, args.device, args.dtype)
    if args.gradient_checkpointing and policy.device.type == "cuda":
        policy.model.language_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    if checkpoint is None:
        policy.model = add_lora(policy.model, args.lora_rank, args.lora_alpha)
    else:
        try:
            policy.model = PeftModel.from_pretrained(policy.model, str(checkpoint / "adapter"), is_trainable=True)
        except Exception as error:
            raise damaged(checkpoint / "adapter", error) from None
    policy.model.eval()
    optimizer = torch.optim.AdamW(trainable_in_float32(policy.model), lr=args.learning_rate)
    if checkpoint is not None:  # peft loaded the saved fp32 LoRA weights into base-dtype ones: load them again in fp32
        set_peft_model_state_dict(policy.model, load_peft_weights(str(checkpoint / "adapter")))
    return policy, optimizer


# ----------------------------------------------------------------------------------------------------------
# Update memory: estimated before the first collection, so that a run whose update cannot fit stops before
# an hour of rollouts rather than at its first update.

# Activation memory of one sample in the update, in bytes per frozen base parameter, with gradient checkpointing
# on (True) or off; and the rest (allocator slack, cuBLAS workspaces). Fitted to the peak memory torch reserved
# in benchmarks/bench_gpu.py on OpenVLA-7B's shapes (H100, ~290 tokens per sample, micro-batch 1-16: 0.94 and
# 3.45 GB per sample, within 0.3 GB of every measured peak). The parameter count stands in for width x depth,
# which holds within the OpenVLA-7B family, not for arbitrary architectures.
UPDATE_ACTIVATION_BYTES_PER_PARAM = {True: 0.125, False: 0.46}
UPDATE_FIXED_BYTES = 0.5e9


def estimate_update_memory(
    num_params: int, param_bytes: int, lora_params: int, micro_batch_size: int, gradient_checkpointing: bool
) -> float:
    """Peak GPU memory (bytes) of `update_policy`: the frozen base weights, the fp32 LoRA weights with their
    gradients and two AdamW moments (16 bytes per LoRA parameter), and one micro-batch's activations."""
    activations = micro_batch_size * UPDATE_ACTIVATION_BYTES_PER_PARAM[gradient_checkpointing] * num_params
    return num_params * param_bytes + 16 * lora_params + activations + UPDATE_FIXED_BYTES


def update_memory_problem(
    num_params: int,
    param_bytes: int,
    lora_params: int,
    micro_batch_size: int,
    gradient_checkpointing: bool,
    available_bytes: float,
) -> Optional[str]:
    """None if the update fits in `available_bytes`; otherwise one line naming the flags that would fit."""

    def need(size: int, checkpointing: bool) -> float:
        return estimate_update_memory(num_params, param_bytes, lora_params, size, checkpointing)

    def flags(size: int, checkpointing: bool) -> str:
        return f"--micro-batch-size {size}" + (" --gradient-checkpointing" if checkpointing else "")

    if need(micro_batch_size, gradient_checkpointing) <= available_bytes:
        return None
    fits = []
    for checkpointing in sorted({gradient_checkpointing, True}):  # never suggest turning checkpointing off
        sizes = [size for size in range(micro_batch_size, 0, -1) if need(size, checkpointing) <= available_bytes]
        if sizes:
            fits.append(flags(sizes[0], checkpointing))
    advice = f"these fit: {' or '.join(fits)}" if fits else "nothing fits: use a GPU with more free memory"
    needed_gb, available_gb = need(micro_batch_size, gradient_checkpointing) / 1e9, available_bytes / 1e9
    return (
        f"{flags(micro_batch_size, gradient_checkpointing)}: the update needs about {needed_gb:.0f} GB of GPU memory "
        f"and {available_gb:.0f} GB are free; {advice}"
    )


def check_update_memory(policy, args: Args) -> None:
    """Stop, naming flags that fit, when the update's estimated peak exceeds the GPU's free memory (CUDA only)."""
    if policy.device.type != "cuda":
        return
    frozen = [p for p in policy.model.parameters() if not p.requires_grad]
    lora_params = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    free, _ = torch.cuda.mem_get_info(policy.device)
    available = free + torch.cuda.memory_reserved(policy.device)  # what torch holds already includes the weights
    problem = update_memory_problem(
        sum(p.numel() for p in frozen),
        frozen[0].element_size(),
        lora_params,
        args.micro_batch_size,
        args.gradient_checkpointing,
        available,
    )
    if problem:
        raise UsageError(f"{problem} (on {torch.cuda.get_device_name(policy.device)})")


def main(args: Args) -> dict:
    saved = None
    if args.resume:
        checkpoint = find_checkpoint(Path(args.resume))
        saved = {**read_trainer_state(checkpoint), **read_checkpoint_files(checkpoint)}
        args = resumed_args(args, saved["args"], Path(args.resume))
    check_args(args)
    task_ids = selected_task_ids(args)
    max_steps = args.max_steps or libero_envs.TRAIN_MAX_STEPS[args.suite]
    reward_files = rollout.read_reward_files(args.suite, task_ids, args.reward_file)  # _lan/_swap: maybe the base's
    run_dir = prepare_run_dir(args)
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_dir.name,
            save_code=True,
        )
    writer = SummaryWriter(str(run_dir))
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    )

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    pool = libero_envs.EnvPool(args.num_envs, step_timeout=args.step_timeout)  # the workers boot while the model loads
    policy, optimizer = load_trainable_policy(args, run_dir / "checkpoint" if saved else None)
    check_update_memory(policy, args)  # before the first collection: an update that cannot fit stops the run here
    completed = 0
    if saved:
        try:
            optimizer.load_state_dict(saved["optimizer.pt"])
        except ValueError as error:
            raise damaged(run_dir / "checkpoint" / "optimizer.pt", error) from None
        set_rng_state(saved["rng.pt"])
        warn_changed_rewards(saved["reward_sha256"], reward_files)
        completed = saved["iteration"]
        print(f"[tgrpo] resuming {run_dir} at iteration {completed + 1}")
    reward_hashes = {str(t): reward_file.sha256 for t, reward_file in reward_files.items()}
    # What a checkpoint holds is taken when an iteration's optimizer step is applied: a save at any later
    # moment (video, evaluation, Ctrl-C, an error) resumes exactly at the next iteration.
    boundary = {"rng": rng_state(), "iteration": completed}

    def checkpoint_now() -> Path:
        state = {"iteration": boundary["iteration"], "args": asdict(args), "reward_sha256": reward_hashes}
        return save_checkpoint(run_dir, policy.model, optimizer, state, boundary["rng"])

    exit_code = 0
    progress = tqdm(range(completed, args.num_iterations), desc="tgrpo", initial=completed, total=args.num_iterations)
    try:
        for iteration in progress:
            tick = time.perf_counter()
            task_id, init_state_id, visit = schedule(iteration, task_ids)
            group = rollout.collect_group(
                policy,
                pool,
                suite=args.suite,
                task_id=task_id,
                init_state_id=init_state_id,
                reward_file=reward_files[task_id],
                max_steps=max_steps,
                temperature=args.temperature,
                termination=args.termination,
                camera_size=args.camera_size,
                placement=visit,
                reward_limits=(args.reward_cpu_seconds, args.reward_memory_mb),
            )
            # A simulator crash is not the policy's doing: leave those trajectories out of the update.
            mask = torch.as_tensor(group.mask & ~group.failed[:, None])
            rewards = torch.as_tensor(group.rewards, dtype=torch.float32)
            advantages, step_adv, traj_adv = compute_advantages(rewards, mask, args.alpha_step, args.alpha_traj)

            update_tick = time.perf_counter()
            with finish_before_interrupt():
                stats = update_policy(policy, group, advantages, mask, optimizer, args)
                boundary = {"rng": rng_state(), "iteration": iteration + 1}
            timing = {**group.timing, "update": time.perf_counter() - update_tick}
            timing["iteration"] = time.perf_counter() - tick
            advantage_stats = {
                "step_mean": step_adv[mask].mean(),
                "step_std": step_adv[mask].std(correction=0),
                "traj_mean": traj_adv.mean(),
                "traj_std": traj_adv.std(correction=0),
            }
            scalars = log_iteration(writer, iteration + 1, group, advantage_stats, stats, timing, args.learning_rate)
            progress.write(
                f"iter {iteration + 1:4d} task {task_id} init {init_state_id:2d} | success {group.success.mean():.2f} "
                f"return {scalars['charts/return_mean']:8.3f} len {group.lengths.mean():5.1f} | "
                f"loss {stats['loss']:+.4f} grad {stats['grad_norm']:.3f} | {scalars['charts/SPS']:.1f} SPS"
            )
            if args.video_every and (iteration + 1) % args.video_every == 0:
                save_video(run_dir, group, iteration + 1)
            if args.save_every and (iteration + 1) % args.save_every == 0:
                checkpoint_now()
            if args.eval_every and (iteration + 1) % args.eval_every == 0:
                run_periodic_eval(policy, pool, args, task_ids, writer, iteration + 1)
    except KeyboardInterrupt:
        print(f"\n[tgrpo] interrupted; saving the {boundary['iteration']} completed iterations")
        exit_code = 130
    except rewards.RewardFileError as error:
        print(f"[tgrpo] stopped: {error}", file=sys.stderr)
        exit_code = 1
    finally:  # on Ctrl-C and on errors alike, keep what the completed iterations learned
        pool.close()
        checkpoint = checkpoint_now()
        writer.close()
        print(
            f"[tgrpo] checkpoint after {boundary['iteration']} iterations: {checkpoint} (continue with --resume {run_dir})"
        )
    return {"run_dir": run_dir, "iteration": boundary["iteration"], "exit_code": exit_code}


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        result = main(cli_args)
    except (UsageError, rewards.RewardFileError) as error:
        sys.exit(f"error: {error}")
    sys.exit(result["exit_code"])
