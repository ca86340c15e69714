"""TGRPO: trajectory-wise group relative policy optimization of an OpenVLA LoRA adapter on LIBERO.

    python tgrpo.py --suite libero_goal --alpha-step 0.3

Each iteration: N envs start from one init state of one task, the policy samples a trajectory in each,
a dense reward file scores every step, and the advantage fuses a step-level and a trajectory-level
comparison across the N trajectories (`compute_advantages`). The loss is -mean(Adv * log pi).
Paper: arXiv 2506.08440. Algorithm details and defaults: DESIGN.md section 2.
"""

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import imageio
import numpy as np
import torch
import tyro
from peft import LoraConfig, PeftModel, get_peft_model
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import evaluate
import rollout


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of python, numpy, torch and the envs"""
    torch_deterministic: bool = True
    """sets torch.backends.cudnn.deterministic"""
    track: bool = False
    """log to Weights and Biases as well (needs `pip install wandb`)"""
    wandb_project_name: str = "tgrpo"
    """the wandb project"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team)"""

    suite: str = "libero_goal"
    """LIBERO suite: libero_spatial, libero_object, libero_goal, libero_10 (Long), libero_90"""
    task_ids: Optional[list[int]] = None
    """tasks to train on, visited in turn (default: every task of the suite)"""
    model: Optional[str] = None
    """base VLA: local dir, hub id or `tiny`; default: OpenVLA-7B fine-tuned on the suite"""
    reward_file: Optional[str] = None
    """one reward file for every task, instead of rewards/<suite>/<task_name>.py"""
    device: Optional[str] = None
    """torch device (default: cuda if available, else cpu, which only `--model tiny` accepts)"""

    num_iterations: int = 300
    """groups to collect and train on (not reported by the paper; 30 per task of a 10-task suite)"""
    num_envs: int = 4
    """N: trajectories per group, all from the same init state (paper: 4; its ablation: 2, 4, 8)"""
    max_steps: int = 200
    """step cap per trajectory (paper: 200; libero_10 demonstrations need up to 505: use --max-steps 520)"""
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
    save_every: int = 10
    """write a checkpoint every this many iterations (and on Ctrl-C)"""
    eval_every: int = 0
    """evaluate the adapter on the suite every this many iterations (0: never)"""
    eval_trials: int = 10
    """trials per task in periodic evaluations (the official protocol uses 50)"""
    eval_max_steps: Optional[int] = None
    """step cap of periodic evaluations (default: the suite's protocol cap)"""
    video_every: int = 25
    """save one trajectory of the group as mp4 every this many iterations (0: never)"""
    resume: Optional[str] = None
    """continue the run in this directory (runs/<run_name>) where it stopped"""
    output_dir: str = "runs"
    """runs are written to <output_dir>/<run_name>/"""


def compute_advantages(
    rewards: torch.Tensor, alpha_step: float, alpha_traj: float, mask: Optional[torch.Tensor] = None, eps: float = 1e-8
) -> torch.Tensor:
    """TGRPO's fused advantage alpha_step * S + alpha_traj * T for a group, shape (N, T).

    S[i, t] is the z-score of R[i, t] across the trajectories that exist at step t; T[i] is the z-score of
    the return G[i] = sum_t R[i, t] across the N trajectories, broadcast over its steps. Masked-out steps
    are 0, and wherever the compared values are all equal (or only one exists) the z-score is 0.

    The std is the biased one (divide by n): the N trajectories are the whole population being ranked,
    not a sample of a larger one, and it stays defined at n = 1 (GRPO implementations differ here;
    with N = 4 the unbiased std is 15% larger, which only rescales the advantage).
    """
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    weight = mask.to(rewards.dtype)
    count = weight.sum(0)
    mean = (rewards * weight).sum(0) / count.clamp(min=1)
    std = (((rewards - mean) ** 2 * weight).sum(0) / count.clamp(min=1)).sqrt()
    spread = torch.where(mask, rewards, -torch.inf).amax(0) - torch.where(mask, rewards, torch.inf).amin(0)
    step = torch.where(spread > 0, (rewards - mean) / (std + eps), 0.0)

    returns, exists = (rewards * weight).sum(1), mask.any(1)
    n = exists.sum().clamp(min=1)
    mean_return = returns[exists].sum() / n
    std_return = (((returns - mean_return) ** 2)[exists].sum() / n).sqrt()
    tied = returns[exists].numel() < 2 or bool(returns[exists].max() == returns[exists].min())
    traj = torch.zeros_like(returns) if tied else (returns - mean_return) / (std_return + eps)

    return torch.where(mask, alpha_step * step + alpha_traj * traj[:, None], 0.0)


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
    """(task_id, init_state_id) of an iteration: cycle through the tasks, then the init states."""
    return task_ids[iteration % len(task_ids)], (iteration // len(task_ids)) % num_init_states


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
# Checkpoints


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


def save_checkpoint(run_dir: Path, model, optimizer, iteration: int, args: Args, reward_hashes: dict) -> Path:
    """Write adapter, optimizer, RNG states and trainer state to run_dir/checkpoint, atomically."""
    final, tmp = run_dir / "checkpoint", run_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # LoRA weights only: PEFT would add the full embeddings and lm_head (0.5 GB for 7B) because all-linear
    # adapts lm_head, but the base copies never change.
    model.save_pretrained(str(tmp / "adapter"), save_embedding_layers=False)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    trainer_state = {"iteration": iteration, "args": asdict(args), "reward_sha256": reward_hashes}
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    if final.exists():  # swap so that a crash at any point leaves one complete checkpoint
        old = run_dir / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    return final


def read_checkpoint(run_dir: Path, args: Args) -> dict:
    """The trainer state of a run to resume; refuse args that would make it a different run."""
    state_file = run_dir / "checkpoint" / "trainer_state.json"
    if not state_file.exists():
        raise FileNotFoundError(f"--resume {run_dir}: no checkpoint at {state_file}. Pass a runs/<run_name> directory")
    saved = json.loads(state_file.read_text())
    for key in ("suite", "model", "lora_rank", "lora_alpha", "task_ids", "num_envs"):
        if saved["args"][key] != getattr(args, key):
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"--resume {run_dir}: the run was trained with {flag} {saved['args'][key]}, not {getattr(args, key)}. "
                f"Resume with the same {flag}, or start a new run without --resume."
            )
    return saved


def warn_changed_rewards(saved_hashes: dict, reward_fns: dict) -> None:
    for task_id, reward_fn in reward_fns.items():
        before = saved_hashes.get(str(task_id))
        if before is not None and before != reward_fn.sha256:
            print(f"[tgrpo] warning: {reward_fn.path} changed since the checkpoint; the run continues with the new one")


# ----------------------------------------------------------------------------------------------------------


def check_args(args: Args) -> list:
    """Fail fast, before any model is loaded, on inputs that cannot work; returns the task ids."""
    rollout.get_suite(args.suite)
    if args.alpha_step == 0 and args.alpha_traj == 0:
        raise ValueError("--alpha-step and --alpha-traj are both 0: the advantage would be 0 everywhere")
    if args.num_envs < 2:
        raise ValueError(f"--num-envs {args.num_envs}: a group comparison needs at least 2 trajectories")
    task_ids = args.task_ids or list(range(rollout.get_suite(args.suite).n_tasks))
    for task_id in task_ids:
        rollout.get_task(args.suite, task_id)
    return task_ids


def load_reward_fns(args: Args, task_ids: list) -> dict:
    """Every reward file of the run, loaded before any work so a missing one costs nothing."""
    return {
        t: rollout.load_reward_fn(args.suite, rollout.get_task(args.suite, t).name, args.reward_file) for t in task_ids
    }


def log_iteration(writer, iteration: int, group, advantages_parts: dict, stats: dict, timing: dict, lr: float):
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
        **{f"advantages/{k}": v for k, v in advantages_parts.items()},
        **{f"losses/{k}": v for k, v in stats.items()},
        **{f"time/{k}": timing[k] for k in ("simulation", "policy", "reward", "update")},
    }
    for name, value in scalars.items():
        writer.add_scalar(name, float(value), iteration)
    return scalars


def main(args: Args) -> dict:
    task_ids = check_args(args)
    reward_fns = load_reward_fns(args, task_ids)
    run_dir = Path(args.resume) if args.resume else None
    saved = read_checkpoint(run_dir, args) if run_dir else None
    if run_dir is None:
        run_name = f"{args.suite}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir = Path(args.output_dir) / run_name
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_dir.name, save_code=True)  # fmt: skip
    writer = SummaryWriter(str(run_dir))
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    pool = rollout.EnvPool(args.num_envs)  # the workers boot while the model loads
    policy = rollout.load_vla(args.model, args.suite, args.device)
    if args.gradient_checkpointing and policy.device.type == "cuda":
        policy.model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if saved:
        policy.model = PeftModel.from_pretrained(policy.model, str(run_dir / "checkpoint" / "adapter"), is_trainable=True)
    else:
        policy.model = add_lora(policy.model, args.lora_rank, args.lora_alpha)
    policy.model.eval()
    optimizer = torch.optim.AdamW(trainable_in_float32(policy.model), lr=args.learning_rate)
    start_iteration = 0
    if saved:
        optimizer.load_state_dict(torch.load(run_dir / "checkpoint" / "optimizer.pt"))
        set_rng_state(torch.load(run_dir / "checkpoint" / "rng.pt", weights_only=False))
        warn_changed_rewards(saved["reward_sha256"], reward_fns)
        start_iteration = saved["iteration"]
        print(f"[tgrpo] resuming {run_dir} at iteration {start_iteration + 1}")
    reward_hashes = {str(t): fn.sha256 for t, fn in reward_fns.items()}

    iteration = start_iteration
    progress = tqdm(range(start_iteration, args.num_iterations), desc="tgrpo", initial=start_iteration, total=args.num_iterations)
    try:
        for iteration in progress:
            tick = time.perf_counter()
            task_id, init_state_id = schedule(iteration, task_ids)
            group = rollout.collect_group(
                policy, pool, args.suite, task_id, init_state_id, reward_fns[task_id], args.max_steps,
                args.temperature, args.termination, args.camera_size, args.seed,
            )  # fmt: skip
            # A simulator crash is not the policy's doing: leave those trajectories out of the update.
            mask = torch.as_tensor(group.mask & ~group.failed[:, None])
            rewards = torch.as_tensor(group.rewards, dtype=torch.float32)
            step_adv = compute_advantages(rewards, 1.0, 0.0, mask)
            traj_adv = compute_advantages(rewards, 0.0, 1.0, mask)
            advantages = args.alpha_step * step_adv + args.alpha_traj * traj_adv

            update_tick = time.perf_counter()
            stats = update_policy(policy, group, advantages, mask, optimizer, args)
            timing = {**group.timing, "update": time.perf_counter() - update_tick}
            timing["iteration"] = time.perf_counter() - tick
            parts = {"step_mean": step_adv[mask].mean(), "step_std": step_adv[mask].std(correction=0),
                     "traj_mean": traj_adv[mask].mean(), "traj_std": traj_adv[mask].std(correction=0)}  # fmt: skip
            scalars = log_iteration(writer, iteration + 1, group, parts, stats, timing, optimizer.param_groups[0]["lr"])
            progress.write(
                f"iter {iteration + 1:4d} task {task_id} init {init_state_id:2d} | success {group.success.mean():.2f} "
                f"return {scalars['charts/return_mean']:8.3f} len {group.lengths.mean():5.1f} | "
                f"loss {stats['loss']:+.4f} grad {stats['grad_norm']:.3f} | {scalars['charts/SPS']:.1f} SPS"
            )
            if args.video_every and (iteration + 1) % args.video_every == 0:
                save_video(run_dir, group, iteration + 1)
            if args.save_every and (iteration + 1) % args.save_every == 0:
                save_checkpoint(run_dir, policy.model, optimizer, iteration + 1, args, reward_hashes)
            if args.eval_every and (iteration + 1) % args.eval_every == 0:
                run_periodic_eval(policy, pool, args, task_ids, writer, iteration + 1)
        iteration = args.num_iterations
    except KeyboardInterrupt:
        print(f"\n[tgrpo] interrupted during iteration {iteration + 1}; saving the {iteration} completed ones")
    finally:  # on Ctrl-C and on errors alike, keep what the completed iterations learned
        pool.close()
        checkpoint = save_checkpoint(run_dir, policy.model, optimizer, iteration, args, reward_hashes)
        writer.close()
        print(f"[tgrpo] checkpoint after {iteration} iterations: {checkpoint} (continue with --resume {run_dir})")
    return {"run_dir": run_dir, "iteration": iteration}


def save_video(run_dir: Path, group, iteration: int) -> None:
    """The first trajectory of the group, as the policy saw it."""
    path = run_dir / "videos" / f"iter{iteration:05d}_{group.task_name}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = list(group.images[0, : max(1, group.lengths[0])])
    imageio.mimwrite(path, frames, fps=rollout.CONTROL_FREQ, macro_block_size=1)


def run_periodic_eval(policy, pool, args: Args, task_ids: list, writer, iteration: int) -> None:
    result = evaluate.evaluate_suite(
        policy, args.suite, task_ids=task_ids, trials_per_task=args.eval_trials, num_envs=args.num_envs, pool=pool,
        max_steps=args.eval_max_steps, camera_size=args.camera_size, progress=False,
    )  # fmt: skip
    writer.add_scalar("eval/success_rate", result["success_rate"], iteration)
    print(f"[tgrpo] eval at iteration {iteration}: {result['success_rate']:.1%} over {len(task_ids)} tasks")


if __name__ == "__main__":
    main(tyro.cli(Args))
