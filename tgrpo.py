"""TGRPO: trajectory-wise group relative policy optimization of an OpenVLA LoRA adapter on LIBERO.

    python tgrpo.py --suite libero_goal --alpha-step 0.3
    python tgrpo.py --resume runs/<run_name>

Each iteration collects G groups (one by default, the paper's setting): in a group, N envs start from one init
state of one task, the policy samples a trajectory in each, and a dense reward file scores every step. The
advantage fuses a step-level and a trajectory-level z-score across the group's N trajectories
(`compute_advantages`); the loss is -mean(Adv * log pi) over every valid step of the iteration, and one optimizer
step follows (`update_policy`). Paper: arXiv 2506.08440. The algorithm and its defaults: README, "The algorithm".

Read it top to bottom: Args, the algorithm, `main` (the training loop), then the plumbing (resume, the exit save,
input checks, logging; the rest of it in checkpoints/), which a fork that changes the algorithm need not touch.
"""

import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Optional

import imageio
import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import cli
import evaluate
import libero_envs
import openvla_policy
import ranks
import rewards
from rewards import hacking
import rollout
from checkpoints import (
    StopNow,
    damaged_file_error,
    find_checkpoint,
    flags_given,
    prepare_run_dir,
    read_checkpoint_files,
    read_trainer_state,
    resumed_args,
    rng_state,
    save_checkpoint,
    set_rng_state,
    stepped_weights,
    stop_on_signals,
    warn_changed_rewards,
)
from cli import UsageError


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

    suite: cli.Suite = "libero_goal"
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
    """weights of the VLA and its LoRA layers (AdamW steps fp32 copies); auto: bfloat16 on cuda, float32 on cpu"""
    cuda_graphs: bool = True
    """on CUDA, replay the policy step as CUDA graphs of static shapes (--no-cuda-graphs: the eager step, as on cpu)"""

    num_iterations: int = 300
    """iterations, one update each on G groups (not reported by the paper; at G = 1: 30 groups per task of 10)"""
    num_envs: int = 4
    """N: trajectories per group, all from the same init state (paper: 4; its ablation: 2, 4, 8)"""
    groups_per_iteration: Optional[int] = None
    """G: groups (task, init state) per update, split over the torchrun ranks; default one per rank (1 alone: paper)"""
    max_steps: Optional[int] = None
    """step cap per trajectory; default: the suite's training cap (paper: 200; 520 for libero_10, whose demos run to 505)"""
    termination: Literal["first-success", "independent"] = "first-success"
    """first-success: all N stop when one succeeds (paper); independent: each stops at its own success"""
    temperature: float = 1.0
    """sampling temperature of the 256 action-token logits (not reported; peers use 1.0-1.6)"""

    reward_shaping: Literal["dense", "potential", "sparse"] = "dense"
    """step rewards: dense, the reward file's values (paper); potential, success + their change; sparse, success"""
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
    micro_batch_size: Optional[int] = None
    """(step) samples per forward/backward pass, gradients accumulated; default: the most that fit the GPU (cpu: 8)"""
    max_grad_norm: float = 1.0
    """gradient norm clip"""
    update_epochs: int = 1
    """passes over the iteration's groups, one optimizer step each; above 1 the PPO ratio clipping becomes active"""
    clip_coef: float = 0.2
    """PPO ratio clip (only matters with --update-epochs above 1)"""
    kl_coef: float = 0.0
    """weight of the KL penalty toward the base policy (the adapter disabled)"""
    gradient_checkpointing: Optional[bool] = None
    """recompute activations in the backward pass on CUDA; default: only where the micro-batch needs it to fit"""

    camera_size: int = cli.CAMERA_SIZE
    """agentview render size in pixels"""
    step_timeout: float = cli.STEP_TIMEOUT
    """seconds an env step may take before its worker counts as hung and is replaced"""
    reset_timeout: float = cli.RESET_TIMEOUT
    """seconds an env reset may take (building a new task's scene takes longest) before its worker counts as hung"""
    reward_cpu_seconds: float = rewards.DEFAULT_CPU_SECONDS
    """CPU seconds one reward call may use before the run stops (reward code runs confined, a process per env)"""
    reward_memory_mb: int = rewards.DEFAULT_MEMORY_MB
    """address space (MB) a reward process may use above its start-up size, all its calls together"""
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
    save_groups: bool = False
    """keep every group (tokens, rewards, what the reward file saw) in <run>/groups/, for rescore.py"""
    resume: Optional[str] = None
    """continue the run in this directory (runs/<run_name>): its arguments are restored from the checkpoint"""
    output_dir: str = "runs"
    """where a run's outputs go: <output-dir>/<run name>/"""
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"
    """torch.distributed backend under torchrun: auto is nccl on GPUs, gloo on CPU"""


# ==========================================================================================================
# The algorithm: a fork that changes TGRPO edits here (and Args). The advantage, the loss, the KL term, the
# LoRA recipe, the update and the order in which tasks are visited; what a group holds is rollout.Group.
# ==========================================================================================================


def group_zscore(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) across the group (dim 0), over the entries `mask` keeps; 0 where masked out, and 0
    wherever the kept values are all equal (or only one is kept), never NaN.

    The std is the biased one (divide by n): the N trajectories are the whole population being ranked, not a
    sample of a larger one, and it stays defined at n = 1 (GRPO implementations differ here; with N = 4 the
    unbiased std is 15% larger, which only rescales the advantage).
    """
    weight = mask.to(values.dtype)
    count = weight.sum(0).clamp(min=1)
    mean = (values * weight).sum(0) / count
    std = (((values - mean) ** 2 * weight).sum(0) / count).sqrt()
    spread = torch.where(mask, values, -torch.inf).amax(0) - torch.where(mask, values, torch.inf).amin(0)
    return torch.where(mask & (spread > 0), (values - mean) / (std + eps), 0.0)


def shape_rewards(values: torch.Tensor, mask: torch.Tensor, success: torch.Tensor, shaping: str) -> torch.Tensor:
    """The step rewards R (N, T) the advantage compares, from the reward file's values (N, T) of the state after each
    step, the steps that exist (mask) and which trajectories succeeded (N,), at their last step. dense: the values
    (paper). sparse: 1 at a successful trajectory's last step. potential: R[i, t] = success[i, t] + Phi(s[t+1]) -
    Phi(s[t]), Phi the file's value, undiscounted like the return; Phi is 0 at the start (the group shares it, so it
    cancels from both z-scores) and after the last step, so each return is its success: trajectories rank as under
    sparse whatever the file says, which only moves reward between steps (Ng, Harada and Russell 1999)."""
    if shaping == "dense":
        return values
    last = mask & ~torch.nn.functional.pad(mask[:, 1:], (0, 1), value=False)
    successes = (last & success[:, None]).to(values.dtype)
    if shaping == "sparse":
        return successes
    phi_after = torch.where(mask & ~last, values, 0.0)
    phi_before = torch.nn.functional.pad(torch.where(mask, values, 0.0)[:, :-1], (1, 0))
    return torch.where(mask, successes + phi_after - phi_before, 0.0)


def compute_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, alpha_step: float, alpha_traj: float, eps: float = 1e-8
):
    """TGRPO's advantage of one group: (fused, step-level S, trajectory-level T) of rewards and mask (N, T).

    S[i, t] z-scores R[i, t] across the trajectories that exist at step t; T[i] z-scores the return
    G[i] = sum_t R[i, t] across the N trajectories. fused = alpha_step * S + alpha_traj * T, 0 on masked-out steps.
    """
    step = group_zscore(rewards, mask, eps)
    returns = (rewards * mask.to(rewards.dtype)).sum(1)
    traj = group_zscore(returns, mask.any(1), eps)
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
    from peft import LoraConfig, get_peft_model  # not at the top: the env workers re-import this file

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else min(rank, 16),
        lora_dropout=0.0,
        target_modules="all-linear",
        init_lora_weights="gaussian",
    )
    return get_peft_model(model, config)


def master_weights(model) -> list:
    """What AdamW steps. In an fp32 model, the LoRA weights themselves. On a bf16 base, fp32 copies of them, and the
    model's LoRA weights stay bf16, rounded from the copies after each step (`follow_master_weights`): lr-1e-5 steps
    would vanish in bf16 rounding, while the forward and backward run in bf16, as OpenVLA trains its LoRA, without
    an fp32 copy of every adapted layer's input (2/5 of the 7B update's activation memory)."""
    params = [p for p in model.parameters() if p.requires_grad]
    dtype = next(p.dtype for p in model.parameters() if not p.requires_grad)  # the frozen base's
    if dtype == torch.float32:
        return params
    masters = [p.detach().to(torch.float32, copy=True) for p in params]
    for p in params:
        p.data = p.data.to(dtype)
    return masters


def gradients_to_master_weights(params: list, masters: list) -> None:
    """Add each LoRA weight's gradient into its master's, in fp32 (a no-op in an fp32 model, where they are one)."""
    for param, master in zip(params, masters):
        if param is not master and param.grad is not None:
            master.grad = param.grad.float() if master.grad is None else master.grad.add_(param.grad)
            param.grad = None


@torch.no_grad()
def follow_master_weights(params: list, masters: list) -> None:
    """The model's LoRA weights rounded from the masters, in place (CUDA graphs read them where they are)."""
    for param, master in zip(params, masters):
        if param is not master:
            param.copy_(master)


def load_trainable_policy(args: Args, checkpoint: Optional[Path], device: Optional[str], policy_batch: int = 1):
    """The VLA with a trainable LoRA adapter (new, or the checkpoint's), its AdamW optimizer, and `args` with the
    update's micro-batch and checkpointing chosen next to a policy step of `policy_batch` envs; stops here, before
    the first collection, when the update would not fit in the GPU's memory."""
    policy = openvla_policy.load_vla(
        args.model, args.suite, device, args.dtype, fast=None if args.cuda_graphs else False
    )
    from peft import PeftModel  # here, not at the top: the env workers re-import this file and never need peft
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    if checkpoint is None:
        policy.model = add_lora(policy.model, args.lora_rank, args.lora_alpha)
    else:
        try:
            policy.model = PeftModel.from_pretrained(policy.model, str(checkpoint / "adapter"), is_trainable=True)
        except Exception as error:
            raise damaged_file_error(checkpoint / "adapter", error) from None
    policy.model.eval()
    params = [p for p in policy.model.parameters() if p.requires_grad]
    if checkpoint is not None:  # peft rounded the saved fp32 LoRA weights to the base dtype: load them exactly
        for param in params:
            param.data = param.data.float()
        set_peft_model_state_dict(policy.model, load_peft_weights(str(checkpoint / "adapter")))
    masters = master_weights(policy.model)
    optimizer = torch.optim.AdamW(masters, lr=args.learning_rate)
    if torch.distributed.is_initialized():  # every rank starts from rank 0's adapter
        for master in masters:
            torch.distributed.broadcast(master, src=0)
        follow_master_weights(params, masters)
    # An update that cannot fit stops the run here, not after an hour of rollouts.
    args = choose_update_batching(policy, args, policy_step_memory(policy, policy_batch))
    if args.gradient_checkpointing:
        reentrant = {"use_reentrant": False}
        policy.model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=reentrant)
    return policy, optimizer, args


def update_policy(policy, groups: list, advantages: list, masks: list, optimizer, args: Args, num_steps: int) -> dict:
    """One or more passes over the valid steps (masks) of this rank's groups, with micro-batches (each within one
    group, so one instruction per call) and gradient accumulation. Each step's loss is divided by `num_steps`,
    the valid steps of the whole iteration on all ranks: once the ranks' gradients are summed, the loss is the
    mean over every valid step of the iteration, and every rank takes the same optimizer step."""
    steps = [torch.nonzero(mask).tolist() for mask in masks]
    old_logp = [torch.zeros(len(group_steps), device=policy.device) for group_steps in steps]
    keys = ("loss", "policy_loss", "kl_to_base", "approx_kl", "clipfrac")
    params = [p for p in policy.model.parameters() if p.requires_grad]
    masters = stepped_weights(optimizer)  # the params themselves in an fp32 model (master_weights)
    policy.model.train()
    for epoch in range(args.update_epochs):
        optimizer.zero_grad(set_to_none=True)
        sums = dict.fromkeys(keys, 0.0)
        for group, group_advantages, group_steps, group_old_logp in zip(groups, advantages, steps, old_logp):
            order = torch.randperm(len(group_steps)).tolist()
            for start in range(0, len(order), args.micro_batch_size):
                batch = order[start : start + args.micro_batch_size]
                rows, cols = (list(index) for index in zip(*(group_steps[k] for k in batch)))
                images, tokens = group.images[rows, cols], group.tokens[rows, cols]
                logp = policy.log_prob(images, group.instruction, tokens, args.temperature)
                if epoch == 0:  # the policy has not moved yet: these are the old log-probs, ratio exactly 1
                    group_old_logp[batch] = logp.detach().float()
                adv = group_advantages[rows, cols].to(logp.device)
                loss, ratio = policy_loss(logp, group_old_logp[batch], adv, args.clip_coef)
                pg_loss = loss.sum() / num_steps
                sums["policy_loss"] += pg_loss.detach().double()  # on the device: no sync per micro-batch
                if args.kl_coef > 0:
                    with torch.no_grad(), policy.model.disable_adapter():
                        base_logp = policy.log_prob(images, group.instruction, tokens, args.temperature)
                    kl = kl_to_base(logp, base_logp).sum() / num_steps
                    loss_total = pg_loss + args.kl_coef * kl
                    sums["kl_to_base"] += kl.detach().double()
                else:
                    loss_total = pg_loss
                loss_total.backward()
                gradients_to_master_weights(params, masters)
                with torch.no_grad():
                    log_ratio = torch.log(ratio)
                    sums["approx_kl"] += ((ratio - 1) - log_ratio).double().sum() / num_steps
                    sums["clipfrac"] += ((ratio - 1).abs() > args.clip_coef).double().sum() / num_steps
                sums["loss"] += loss_total.detach().double()
        ranks.sum_gradients_over_ranks(masters)
        grad_norm = torch.nn.utils.clip_grad_norm_(masters, args.max_grad_norm).item()
        optimizer.step()
        follow_master_weights(params, masters)
        stats = dict(zip(keys, ranks.sum_over_ranks([float(v) for v in sums.values()])), grad_norm=grad_norm)
    policy.model.eval()
    # Teacher-forced vs sampling log-probs: ~1e-6 in fp32; in bf16 it shows how far the two numerics drift.
    sampled = [group.log_probs[mask.numpy()] for group, mask in zip(groups, masks)]
    mismatch = sum(float(np.abs(old.cpu().numpy() - logp).sum()) for old, logp in zip(old_logp, sampled))
    mismatch, count = ranks.sum_over_ranks([mismatch, sum(len(logp) for logp in sampled)])
    stats["logprob_mismatch"] = mismatch / max(count, 1)
    return stats


# ----------------------------------------------------------------------------------------------------------
# Update memory: estimated before the first collection, so that a run whose update cannot fit stops before
# an hour of rollouts rather than at its first update.

# Activation memory of one sample in the update, in bytes per frozen base parameter in bf16, with gradient
# checkpointing on (True) or off; and the rest (allocator slack, cuBLAS workspaces). With fp32 LoRA layers they were
# fitted to the peaks torch reserved in benchmarks/bench_gpu.py on OpenVLA-7B's shapes (H100, ~290 tokens a sample,
# micro-batch 1-16: 0.94 and 3.45 GB a sample, every peak within 0.3 GB). The bf16 LoRA layers of master_weights
# save 0.6 and 2.0 GB a sample for backward where fp32 ones saved 0.93 and 3.23 (counted on the CPU: the bytes
# autograd keeps, OpenVLA-7B's shapes with 2 and 4 Llama layers, extrapolated to 32), so these are the fit scaled by
# that count and rounded up; `bench_gpu.py` prints them beside measured peaks. The parameter count stands in for
# width x depth, which holds within the OpenVLA-7B family, not for arbitrary architectures.
UPDATE_ACTIVATION_BYTES_PER_PARAM = {True: 0.08, False: 0.29}
UPDATE_FIXED_BYTES = 0.5e9
# The update's micro-batch by default: the largest that fits, up to MAX_MICRO_BATCH (in the H100 table of the
# README, 8 samples took 106 ms each, 16 took 65 with checkpointing, 51 without); on cpu, CPU_MICRO_BATCH.
MAX_MICRO_BATCH = 32
CPU_MICRO_BATCH = 8


def estimate_update_memory(
    num_params: int, param_bytes: int, lora_params: int, micro_batch_size: int, gradient_checkpointing: bool
) -> float:
    """Peak GPU memory (bytes) of tgrpo.py's `update_policy`: the frozen base weights; per LoRA parameter its fp32
    master weight, gradient and two AdamW moments (16 bytes) and, on a bf16 base, its bf16 weight and gradient (4
    more); and one micro-batch's activations."""
    activations = micro_batch_size * UPDATE_ACTIVATION_BYTES_PER_PARAM[gradient_checkpointing] * num_params
    activations *= param_bytes / 2  # the constants are bf16's
    lora_bytes = 16 if param_bytes == 4 else 16 + 2 * param_bytes
    return num_params * param_bytes + lora_bytes * lora_params + activations + UPDATE_FIXED_BYTES


def update_memory_problem(sizes: dict, micro_batch_size: int, checkpointing: bool, available: float) -> Optional[str]:
    """None if the update fits in `available` bytes; otherwise one line naming the flags that would fit. `sizes`:
    the model's num_params, param_bytes and lora_params, as estimate_update_memory takes them."""

    def need(size: int, with_checkpointing: bool) -> float:
        return estimate_update_memory(**sizes, micro_batch_size=size, gradient_checkpointing=with_checkpointing)

    def flags(size: int, with_checkpointing: bool) -> str:
        return f"--micro-batch-size {size} --gradient-checkpointing {with_checkpointing}"

    if need(micro_batch_size, checkpointing) <= available:
        return None
    fits = []
    for with_checkpointing in sorted({checkpointing, True}):  # never suggest turning checkpointing off
        fitting = [size for size in range(micro_batch_size, 0, -1) if need(size, with_checkpointing) <= available]
        if fitting:
            fits.append(flags(fitting[0], with_checkpointing))
    advice = f"these fit: {' or '.join(fits)}" if fits else "nothing fits: use a GPU with more free memory"
    needed_gb, available_gb = need(micro_batch_size, checkpointing) / 1e9, available / 1e9
    return (
        f"{flags(micro_batch_size, checkpointing)}: the update needs about {needed_gb:.0f} GB of GPU memory "
        f"and {available_gb:.0f} GB are free; {advice}"
    )


def update_out_of_memory(args: Args, run_dir: Path, error: Exception) -> str:
    """One line for an update that ran out of GPU memory: how it was batched, and the smaller batching to resume
    with (checkpointing first: it saves the most)."""
    reason = (str(error).strip().splitlines() or ["out of memory"])[0][:200]
    ran = f"--micro-batch-size {args.micro_batch_size} --gradient-checkpointing {args.gradient_checkpointing}"
    if args.micro_batch_size == 1 and args.gradient_checkpointing:
        advice = f"nothing smaller exists: free the GPU of other processes, then continue with --resume {run_dir}"
    else:
        smaller = args.micro_batch_size // 2 if args.gradient_checkpointing else args.micro_batch_size
        advice = f"continue with --resume {run_dir} --micro-batch-size {smaller} --gradient-checkpointing True"
    return f"the update ran out of GPU memory with {ran} ({reason}); the completed iterations are saved; {advice}"


def update_memory_sizes(model) -> dict:
    """The model's sizes as estimate_update_memory takes them: frozen parameters, bytes each, LoRA parameters."""
    frozen = [p for p in model.parameters() if not p.requires_grad]
    lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return dict(
        num_params=sum(p.numel() for p in frozen), param_bytes=frozen[0].element_size(), lora_params=lora_params
    )


def fitting_update_batching(
    sizes: dict, available: float, micro_batch_size: Optional[int] = None, checkpointing: Optional[bool] = None
) -> Optional[tuple]:
    """(micro-batch, checkpointing): the largest micro-batch up to MAX_MICRO_BATCH (or the one given) whose update
    fits in `available` bytes, without gradient checkpointing where it fits so (or as given); None if none fits.
    Bigger micro-batches launch fewer kernels per sample, and checkpointing computes the forward pass twice."""
    for size in [micro_batch_size] if micro_batch_size else range(MAX_MICRO_BATCH, 0, -1):
        for with_checkpointing in [checkpointing] if checkpointing is not None else [False, True]:
            need = estimate_update_memory(**sizes, micro_batch_size=size, gradient_checkpointing=with_checkpointing)
            if need <= available:
                return size, with_checkpointing
    return None


def policy_step_memory(policy, batch: int) -> int:
    """Bytes the fast policy step keeps on the GPU (its KV cache and CUDA graphs) once it has served `batch` envs,
    which the update cannot use: measured by serving blank frames once (greedy: no random number is drawn), with an
    instruction longer than LIBERO's (its buffers then fit every task's)."""
    if not (policy.fast and policy.device.type == "cuda"):
        return 0
    before = torch.cuda.memory_reserved(policy.device)
    frames = np.zeros((batch, 224, 224, 3), np.uint8)  # as openvla_image.preprocess_image delivers them
    policy.act(frames, " ".join(["move"] * 40), temperature=0.0)
    return torch.cuda.memory_reserved(policy.device) - before


def choose_update_batching(policy, args: Args, policy_step_bytes: int = 0) -> Args:
    """`args` with --micro-batch-size and --gradient-checkpointing set: as given, or on CUDA what fits the GPU's
    free memory next to the policy step's (fitting_update_batching), on cpu 8 without checkpointing. Stops, naming
    flags that fit, when what was given cannot fit."""
    if policy.device.type != "cuda":
        return replace(args, micro_batch_size=args.micro_batch_size or CPU_MICRO_BATCH, gradient_checkpointing=False)
    sizes = update_memory_sizes(policy.model)
    free, _ = torch.cuda.mem_get_info(policy.device)
    # torch's reserve holds the weights, which the estimate counts, and the policy step's buffers, which it omits
    available = free + torch.cuda.memory_reserved(policy.device) - policy_step_bytes
    choice = fitting_update_batching(sizes, available, args.micro_batch_size, args.gradient_checkpointing)
    if choice is None:
        checkpointing = args.gradient_checkpointing is not False
        problem = update_memory_problem(sizes, args.micro_batch_size or 1, checkpointing, available)
        raise UsageError(f"{problem} (on {torch.cuda.get_device_name(policy.device)})")
    chosen = args.micro_batch_size is None or args.gradient_checkpointing is None
    if chosen and (not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0):
        print(
            f"[tgrpo] update: micro-batch {choice[0]}, gradient checkpointing {'on' if choice[1] else 'off'} (the "
            f"largest that fits {available / 1e9:.0f} GB of {torch.cuda.get_device_name(policy.device)}; "
            "--micro-batch-size and --gradient-checkpointing choose)",
            flush=True,
        )
    return replace(args, micro_batch_size=choice[0], gradient_checkpointing=choice[1])


# ----------------------------------------------------------------------------------------------------------
# Which groups an iteration collects


def schedule(iteration: int, task_ids: list, num_init_states: int = 50) -> tuple:
    """(task_id, init_state_id, visit) of an iteration: cycle through the tasks, then the init states.

    `visit` (how many times the task came before) picks the fixture placement, as the episode number does in
    evaluation: the 50 first visits of a task see exactly the (init state, placement) pairs evaluation sees.
    """
    visit = iteration // len(task_ids)
    return task_ids[iteration % len(task_ids)], visit % num_init_states, visit


def group_indices(iteration: int, groups_per_iteration: int, rank: int, world_size: int) -> range:
    """Run-wide indices of the groups this rank collects in an iteration: its block of the iteration's G.

    A group's index picks its (task, init state, placement) through `schedule` and seeds its sampling stream,
    so G groups on one process or spread over K ranks are the same groups.
    """
    per_rank = groups_per_iteration // world_size
    first = iteration * groups_per_iteration + rank * per_rank
    return range(first, first + per_rank)


def collect_iteration(policy, pool, args: Args, iteration: int, task_ids: list, reward_files: dict, stop) -> list:
    """This rank's share of the iteration's G groups, each from the (task, init state, placement) `schedule` gives
    its run-wide index and with a sampling stream of its own; one batched policy call per control step serves all."""
    rank, world_size = ranks.rank_and_world_size()
    starts = []
    for index in group_indices(iteration, args.groups_per_iteration, rank, world_size):
        task_id, init_state_id, visit = schedule(index, task_ids)
        generator = rollout.group_generator(args.seed, index, policy.device)
        starts.append(rollout.GroupStart(task_id, init_state_id, placement=visit, generator=generator))
    return rollout.collect_groups(
        policy,
        pool,
        suite=args.suite,
        starts=starts,
        reward_files=reward_files,
        max_steps=args.max_steps or cli.TRAIN_MAX_STEPS[args.suite],
        temperature=args.temperature,
        termination=args.termination,
        camera_size=args.camera_size,
        reward_limits=(args.reward_cpu_seconds, args.reward_memory_mb),
        stop=stop,
    )


# ==========================================================================================================
# The training loop
# ==========================================================================================================


def main(args: Args, given_flags: set = frozenset()) -> dict:
    """Train; `given_flags` (see flags_given) are the flags of the command line, which --resume checks."""
    check_args(args)  # the command line, before the ranks meet
    rank, world_size, device = ranks.start_distributed(args.dist_backend, args.device)
    args, resumed = resume_run(args, given_flags, rank, world_size) if args.resume else (args, None)
    if resumed is not None and resumed["iteration"] >= args.num_iterations:  # complete: resume_run said so
        return {"run_dir": Path(args.resume), "iteration": resumed["iteration"], "exit_code": 0}
    task_ids = selected_task_ids(args)
    reward_files = rollout.read_reward_files(args.suite, task_ids, args.reward_file)  # _lan/_swap: maybe the base's
    args = replace(args, groups_per_iteration=args.groups_per_iteration or world_size)
    run_dir = prepare_run_dir(args, started=ranks.from_rank0(int(time.time())))
    writer = start_logging(args, run_dir) if rank == 0 else None
    rollout.seed_everything(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    # The workers boot while the model loads; they ignore SIGTERM, so every way out closes them.
    num_envs, pipeline = args.groups_per_iteration // world_size * args.num_envs, openvla_policy.preprocess_image
    pool = libero_envs.EnvPool(num_envs, pipeline, step_timeout=args.step_timeout, reset_timeout=args.reset_timeout)
    try:
        policy, optimizer, args = load_trainable_policy(args, resumed and resumed["checkpoint"], device, num_envs)
        last_update = restore_training_state(resumed, optimizer, reward_files, run_dir)
    except BaseException:
        pool.close()
        raise

    def save(compare_ranks: bool = True) -> Optional[Path]:
        return save_run(run_dir, policy, optimizer, args, last_update, reward_files, compare_ranks)

    previous_handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    stop_requested = stop_on_signals(distributed=world_size > 1)
    exit_code, save_on_exit = 0, True
    progress = progress_bar(last_update["iteration"], args.num_iterations, rank)
    reward_checks = {}  # per task: its recent returns and successes, for the reward-hacking check
    reward_paths = {libero_envs.get_task(args.suite, t).name: f.path for t, f in reward_files.items()}
    try:
        for iteration in progress:
            tick = time.perf_counter()
            groups = collect_iteration(policy, pool, args, iteration, task_ids, reward_files, stop_requested)
            # TGRPO's advantage, per group. A simulator crash is not the policy's doing: leave it out of the update.
            masks = [torch.as_tensor(group.mask & ~group.failed[:, None]) for group in groups]
            group_rewards = [
                shape_rewards(*(torch.as_tensor(a) for a in (g.rewards, g.mask, g.success)), args.reward_shaping)
                for g in groups
            ]
            advantages, step_advantages, traj_advantages = zip(
                *(compute_advantages(r, m, args.alpha_step, args.alpha_traj) for r, m in zip(group_rewards, masks))
            )
            counts = [sum(int(mask.sum()) for mask in masks), sum(int(g.mask.sum()) for g in groups), stop_requested()]
            valid_steps, env_steps, stopping = ranks.sum_over_ranks(counts)  # over this iteration's groups on all ranks
            if stopping:  # every rank sees the same sum, so all stop here together
                raise KeyboardInterrupt

            update_tick = time.perf_counter()
            try:
                stats = update_policy(policy, groups, advantages, masks, optimizer, args, max(int(valid_steps), 1))
            except torch.OutOfMemoryError as error:  # the estimate missed, or another process holds the GPU
                raise UsageError(update_out_of_memory(args, run_dir, error)) from None
            global_step = last_update["global_step"] + int(env_steps)  # env steps so far: the x-axis of every chart
            last_update = {"rng": rng_state(), "iteration": iteration + 1, "global_step": global_step}
            timing = {**groups[0].timing, "update": time.perf_counter() - update_tick}
            timing["iteration"] = time.perf_counter() - tick

            summary = summarize_groups(groups, masks, step_advantages, traj_advantages)  # every rank's groups
            if rank == 0:
                log_iteration(writer, progress, args, last_update, summary, stats, timing, task_ids)
                check_reward_files(writer, reward_checks, summary, global_step, reward_paths)
                if args.video_every and (iteration + 1) % args.video_every == 0:
                    save_video(run_dir, groups[0], iteration + 1)
            if args.save_groups:  # every rank its own
                for index, group in zip(group_indices(iteration, args.groups_per_iteration, rank, world_size), groups):
                    group.save(run_dir / "groups" / f"iter{iteration + 1:05d}_group{index:05d}.npz")
            if args.save_every and (iteration + 1) % args.save_every == 0:
                save()
            if args.eval_every and (iteration + 1) % args.eval_every == 0:
                run_periodic_eval(policy, pool, args, task_ids, writer, last_update, stop_requested)
    except KeyboardInterrupt:
        exit_code = 130
    except StopNow:
        exit_code, save_on_exit = 130, False
    except rewards.RewardFileError as error:
        print(f"[tgrpo] stopped: {error}", file=sys.stderr)
        exit_code = 1
    finally:  # on Ctrl-C and on errors alike, keep what the completed iterations learned
        exit_code = close_run(pool, writer, save, exit_code, save_on_exit, last_update, run_dir, previous_handlers)
    return {"run_dir": run_dir, "iteration": last_update["iteration"], "exit_code": exit_code}


# ==========================================================================================================
# Plumbing: resume, the exit save, input checks, logging (the checkpoint files, the run directory and the stop
# signals are in checkpoints/). Nothing below changes what is learned; a fork that changes the algorithm should
# not need to touch it, except to keep a new flag that changes what is learned out of SAFE_TO_CHANGE_ON_RESUME.
# ==========================================================================================================

# ----------------------------------------------------------------------------------------------------------
# Resuming and saving

# Flags a resumed run may change: they do not alter what is learned (micro-batching only regroups the sums).
SAFE_TO_CHANGE_ON_RESUME = set(
    "num_iterations save_every eval_every eval_trials_per_task eval_max_steps video_every track wandb_project_name "
    "wandb_entity step_timeout reset_timeout micro_batch_size gradient_checkpointing device dtype output_dir resume "
    "reward_cpu_seconds reward_memory_mb save_groups cuda_graphs".split()
)


def resume_run(args: Args, given_flags: set, rank: int, world_size: int) -> tuple:
    """(the run's own arguments, its newest complete checkpoint's trainer state) for --resume. The state holds the
    optimizer and RNG states and the checkpoint's path too, unless the run is complete: then it says so and
    nothing more is read."""
    # Rank 0 verifies and tidies what a crash may have left; the others wait for it.
    checkpoint = Path(ranks.from_rank0(str(find_checkpoint(Path(args.resume))) if rank == 0 else None))
    saved, _ = read_trainer_state(checkpoint)
    args = resumed_args(args, saved["args"], Path(args.resume), given_flags, SAFE_TO_CHANGE_ON_RESUME)
    check_args(args)
    if saved["iteration"] >= args.num_iterations:
        if rank == 0:
            print(
                f"[tgrpo] nothing to do: {args.resume} has completed {saved['iteration']} iterations and "
                f"--num-iterations is {args.num_iterations}; pass a larger --num-iterations to train on"
            )
        return args, saved
    saved.update(read_checkpoint_files(checkpoint), checkpoint=checkpoint)
    if saved.get("world_size", 1) != world_size:
        trained_on = saved.get("world_size", 1)
        launch = f"torchrun --nproc-per-node {trained_on} tgrpo.py" if trained_on > 1 else "python tgrpo.py"
        raise UsageError(
            f"--resume {args.resume}: the run was trained on {trained_on} rank(s), and this is {world_size}; its "
            f"sampling streams and update sums follow its ranks, so resume it as it ran: {launch} --resume {args.resume}"
        )
    return args, saved


def restore_training_state(resumed: Optional[dict], optimizer, reward_files: dict, run_dir: Path) -> dict:
    """The state as of the last applied optimizer step (RNG states, iteration, global_step), which a checkpoint saves
    besides the adapter and the optimizer: a new run's, or the resumed checkpoint's, whose optimizer and RNG states
    are restored here."""
    if resumed is None:
        return {"rng": rng_state(), "iteration": 0, "global_step": 0}
    try:
        optimizer.load_state_dict(resumed["optimizer.pt"])
    except ValueError as error:
        raise damaged_file_error(resumed["checkpoint"] / "optimizer.pt", error) from None
    set_rng_state(resumed["rng.pt"])
    warn_changed_rewards(resumed.get("reward_sha256", {}), reward_files)
    if ranks.rank_and_world_size()[0] == 0:
        print(f"[tgrpo] resuming {run_dir} at iteration {resumed['iteration'] + 1}")
    # A checkpoint from before TensorBoard's x-axis was global_step has none: its charts go on from 0.
    return {"rng": rng_state(), "iteration": resumed["iteration"], "global_step": resumed.get("global_step", 0)}


def save_run(run_dir: Path, policy, optimizer, args: Args, last_update: dict, reward_files: dict, compare_ranks=True):
    """Rank 0 writes the checkpoint of the last applied optimizer step (checkpoints/); returns its path (None on the
    other ranks). `compare_ranks`: first stop if the ranks' adapters differ."""
    if compare_ranks:
        ranks.check_ranks_agree(stepped_weights(optimizer))
    rank, world_size = ranks.rank_and_world_size()
    if rank > 0:
        return None
    state = {"iteration": last_update["iteration"], "global_step": last_update["global_step"], "args": asdict(args)}
    state["reward_sha256"] = {str(t): reward_file.sha256 for t, reward_file in reward_files.items()}
    state["world_size"] = world_size
    return save_checkpoint(run_dir, policy.model, optimizer, state, last_update["rng"])


def close_run(pool, writer, save, exit_code: int, save_on_exit: bool, last_update: dict, run_dir: Path, handlers: dict):
    """The way out of training, after a stop, an error or the last iteration: close the env workers and, unless a
    second Ctrl-C said not to, `save()` what the completed iterations learned; put the signal `handlers` back.
    Returns the exit code (130 when a second Ctrl-C cut the save short)."""
    rank, world_size = ranks.rank_and_world_size()
    try:  # the message is printed in here, so a second Ctrl-C that answers it lands in `except StopNow`
        if exit_code == 130 and save_on_exit and rank == 0:
            print(f"\n[tgrpo] interrupted; saving the {last_update['iteration']} completed iterations")
        pool.close()
        if save_on_exit:
            # After a failure on one rank the others may be gone: only a stop they all took compares them.
            compared = exit_code != 1 and sys.exc_info()[0] is None
            saved_to = save(compare_ranks=compared)
            if rank == 0:
                same = f", the same on all {world_size} ranks" if world_size > 1 and compared else ""
                print(f"[tgrpo] checkpoint after {last_update['iteration']} iterations{same}: {saved_to} ", end="")
                print(f"(continue with --resume {run_dir})")
    except StopNow:  # a second Ctrl-C during the exit save: a half-written one never replaces the last one
        exit_code, save_on_exit = 130, False
        pool.close()  # again, if the signal cut it short (later signals are ignored): workers ignore SIGTERM
    if not save_on_exit:
        print(f"\n[tgrpo] stopped at once; the last checkpoint written stays ({run_dir / 'checkpoint'})")
    if writer is not None:
        writer.close()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    return exit_code


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
        (args.micro_batch_size is not None and args.micro_batch_size < 1, "--micro-batch-size", "use 1 or more"),
        (args.lora_rank < 1, "--lora-rank", "use 1 or more (paper: 16)"),
        (args.lora_alpha is not None and args.lora_alpha <= 0, "--lora-alpha", "use a positive value"),
        (args.learning_rate <= 0, "--learning-rate", "use a positive value (paper: 1e-5)"),
        (args.num_iterations < 1, "--num-iterations", "use 1 or more"),
        (args.update_epochs < 1, "--update-epochs", "use 1 or more"),
        (args.step_timeout <= 0, "--step-timeout", "use a positive number of seconds"),
        (args.reset_timeout <= 0, "--reset-timeout", "use a positive number of seconds"),
        (args.save_every < 0, "--save-every", "use 0 (never) or a positive period"),
        (args.eval_every < 0, "--eval-every", "use 0 (never) or a positive period"),
        (args.video_every < 0, "--video-every", "use 0 (never) or a positive period"),
        (not 1 <= args.eval_trials_per_task <= 50, "--eval-trials-per-task", "LIBERO has 50 init states: use 1..50"),
        *rewards.limit_problems(args.reward_cpu_seconds, args.reward_memory_mb),
    ]
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's number of ranks
    groups, shares = args.groups_per_iteration, f"the {world_size} torchrun ranks collect equal shares: use a multiple"
    problems += [
        (groups is not None and groups < 1, "--groups-per-iteration", "use 1 or more"),
        (groups is not None and groups % world_size != 0, "--groups-per-iteration", f"{shares} of {world_size}"),
    ]
    task_ids = selected_task_ids(args)
    repeated = sorted({t for t in task_ids if task_ids.count(t) > 1})
    problems.append((repeated, "--task-ids", f"task(s) {' '.join(map(str, repeated))} repeated; list each task once"))
    cli.check_flags(args, problems)
    for task_id in task_ids:
        libero_envs.get_task(args.suite, task_id)
    rollout.check_device(args.device)
    ranks.check_dist_backend(args.dist_backend, args.device)
    openvla_policy.resolve_checkpoint(args.model, args.suite)


def selected_task_ids(args: Args) -> list:
    return list(args.task_ids) if args.task_ids else list(range(libero_envs.get_suite(args.suite).n_tasks))


# ----------------------------------------------------------------------------------------------------------
# Logging: TensorBoard (and wandb) on rank 0, every scalar against global_step, the env steps so far


def start_logging(args: Args, run_dir: Path) -> SummaryWriter:
    if args.track:
        import wandb

        run = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=run_dir.name, config=vars(args))
        wandb.init(**run, sync_tensorboard=True, save_code=True)
    writer = SummaryWriter(str(run_dir))
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    return writer


def progress_bar(completed: int, num_iterations: int, rank: int) -> tqdm:
    """The iterations still to run, with a bar in a terminal (piped to a file, the `iter` lines say it all)."""
    hidden = rank > 0 or not (sys.stdout.isatty() and sys.stderr.isatty())
    return tqdm(range(completed, num_iterations), desc="tgrpo", initial=completed, total=num_iterations, disable=hidden)


def summarize_groups(groups: list, masks: list, step_advantages: list, traj_advantages: list) -> dict:
    """What an iteration logs, over every rank's groups: each rank summarizes its own, and all gather them."""
    own = {
        "tasks": np.concatenate([[group.task_name] * len(group.success) for group in groups]),
        "success": np.concatenate([group.success for group in groups]),
        "returns": np.concatenate([group.returns for group in groups]),
        "lengths": np.concatenate([group.lengths for group in groups]),
        "failed": np.concatenate([group.failed for group in groups]),
        "env_steps": np.array([sum(int(group.mask.sum()) for group in groups)]),
        "step_advantages": np.concatenate([step[mask].numpy() for step, mask in zip(step_advantages, masks)]),
        "traj_advantages": np.concatenate([traj.numpy() for traj in traj_advantages]),
    }
    parts = ranks.gather_from_ranks(own)
    return {key: np.concatenate([part[key] for part in parts]) for key in own}


def log_iteration(writer, progress, args: Args, last_update: dict, summary: dict, stats: dict, timing: dict, task_ids):
    """TensorBoard's scalars of the iteration just done, against global_step, and its `iter` line."""
    iteration, global_step = last_update["iteration"], last_update["global_step"]
    returns = summary["returns"][~summary["failed"]] if (~summary["failed"]).any() else summary["returns"]
    scalars = {
        "charts/iteration": iteration,
        "charts/success_rate": summary["success"].mean(),
        "charts/return_mean": returns.mean(),
        "charts/return_min": returns.min(),
        "charts/return_max": returns.max(),
        "charts/episode_length": summary["lengths"].mean(),
        "charts/env_crashes": summary["failed"].sum(),
        "charts/learning_rate": args.learning_rate,
        "charts/SPS": summary["env_steps"].sum() / timing["iteration"],
        "advantages/step_mean": summary["step_advantages"].mean(),
        "advantages/step_std": summary["step_advantages"].std(),
        "advantages/traj_mean": summary["traj_advantages"].mean(),
        "advantages/traj_std": summary["traj_advantages"].std(),
        **{f"losses/{k}": v for k, v in stats.items()},
        **{f"time/{k}": timing[k] for k in ("simulation", "policy", "update", "iteration")},
    }
    for name, value in scalars.items():
        writer.add_scalar(name, float(value), global_step)
    indices = group_indices(iteration - 1, args.groups_per_iteration, rank=0, world_size=1)  # all ranks' groups
    where = ", ".join("{}/{}".format(*schedule(index, task_ids)[:2]) for index in indices)
    progress.write(
        f"iter {iteration:4d} task/init {where} | success {summary['success'].mean():.2f} "
        f"return {scalars['charts/return_mean']:8.3f} len {summary['lengths'].mean():5.1f} | "
        f"loss {stats['loss']:+.4f} grad {stats['grad_norm']:.3f} | {scalars['charts/SPS']:.1f} SPS"
    )


def check_reward_files(writer, history: dict, summary: dict, global_step: int, reward_paths: dict) -> None:
    """Does each task's reward file still rank success first (rewards.hacking)? Logs reward_check/<task>/..., and one
    line when a sign of reward hacking appears. A crashed env's trajectory says nothing about the reward file."""
    valid = ~summary["failed"]
    scalars, signs = hacking.track_reward_files(history, *(summary[k][valid] for k in ("tasks", "returns", "success")))
    for name, value in scalars.items():
        writer.add_scalar(f"reward_check/{name}", float(value), global_step)
    for task, text in signs:
        tqdm.write(f"[tgrpo] warning: {task}: {text}; is {reward_paths[task]} rewarding the task?", file=sys.stderr)


def save_video(run_dir: Path, group, iteration: int) -> None:
    """The first trajectory of the group, as the policy saw it."""
    path = run_dir / "videos" / f"iter{iteration:05d}_{group.task_name}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(group.images[0, : max(1, group.lengths[0])])
    imageio.mimwrite(path, frames, fps=libero_envs.CONTROL_FREQ, macro_block_size=1)


def run_periodic_eval(policy, pool, args: Args, task_ids: list, writer, last_update: dict, stop) -> None:
    """The tasks are split over the ranks; rank 0 (the one with a writer) logs the result."""
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
        stop=stop,
    )
    if writer is not None:
        writer.add_scalar("eval/success_rate", result["success_rate"], last_update["global_step"])
        iteration, rate = last_update["iteration"], result["success_rate"]
        print(f"[tgrpo] eval at iteration {iteration}: {rate:.1%} over {len(task_ids)} tasks")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's stop is a Ctrl-C, even while loading
    sys.stdout.reconfigure(line_buffering=True)  # piped to a file: each line at once, in order with stderr's
    cli_args = tyro.cli(Args)
    try:
        result = main(cli_args, flags_given(sys.argv[1:]))
    except (UsageError, rewards.RewardFileError) as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        print("\n[tgrpo] interrupted before training began: nothing to save", file=sys.stderr)
        sys.exit(130)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    sys.exit(result["exit_code"])
