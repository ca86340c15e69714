"""Data parallel under torchrun (which sets RANK, WORLD_SIZE and LOCAL_RANK), for tgrpo.py and evaluate.py alike:
join the process group, then sum, gather or broadcast across the ranks. In a single process every helper is the
identity, so the scripts call them unconditionally.
"""

import os
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from cli import UsageError


def start_distributed(backend: str, device: Optional[str]) -> tuple:
    """(rank, world size, device). Under torchrun: join the process group (auto: nccl on GPUs, gloo on CPU),
    and on GPUs take GPU LOCAL_RANK, for the model and for rendering; else (0, 1, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_gpu = torch.device(device).type == "cuda" if device else torch.cuda.is_available()
    backend = ("nccl" if on_gpu else "gloo") if backend == "auto" else backend
    check_dist_backend(backend, device)
    if on_gpu:
        if local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"torchrun started {os.environ.get('LOCAL_WORLD_SIZE', local_rank + 1)} ranks on this node, which has "
                f"{torch.cuda.device_count()} GPU(s): one GPU per rank, so use --nproc-per-node {torch.cuda.device_count()}"
            )
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # robosuite wants a GPU id from this list
        egl_device = visible.split(",")[local_rank] if visible else str(local_rank)
        os.environ.setdefault("MUJOCO_EGL_DEVICE_ID", egl_device)  # the env workers inherit it
    dist.init_process_group(backend)
    return dist.get_rank(), world_size, device


def check_dist_backend(backend: str, device: Optional[str]) -> None:
    """nccl runs on GPUs only: refuse it on the CPU, under torchrun or not (without torchrun it would do nothing)."""
    on_gpu = torch.device(device).type == "cuda" if device else torch.cuda.is_available()
    if backend == "nccl" and not on_gpu:
        why = f"--device {device} keeps the ranks on the CPU" if torch.cuda.is_available() else "no CUDA GPU is visible"
        raise UsageError(f"--dist-backend nccl: {why}, and nccl runs on GPUs only; use --dist-backend gloo (or auto)")


def rank_and_world_size() -> tuple:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def gather_from_ranks(value) -> list:
    """[rank 0's value, rank 1's, ...] on every rank; [value] in a single process."""
    if not dist.is_initialized():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def sum_over_ranks(values: list) -> list:
    """Elementwise sums of a list of numbers over the ranks (the list itself in a single process)."""
    if not dist.is_initialized():
        return list(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def from_rank0(value):
    """Rank 0's value on every rank (e.g. a run directory named after rank 0's clock)."""
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def sum_gradients_over_ranks(params: list) -> None:
    """One all-reduce of all the parameters' gradients, flattened (a no-op in a single process)."""
    if not dist.is_initialized():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([grad.flatten() for grad in grads])
    dist.all_reduce(flat)
    for p, grad in zip(params, flat.split([grad.numel() for grad in grads])):
        p.grad = grad.view_as(p)


def check_ranks_agree(params: list) -> None:
    """Stop if the ranks' parameters differ (they take the same steps from the same start, so they never should)."""
    checksum = [
        float(sum(p.detach().double().sum() for p in params)),
        float(sum(p.detach().double().square().sum() for p in params)),
    ]
    sums = gather_from_ranks(checksum)
    if any(not np.allclose(other, sums[0], rtol=1e-9, atol=0) for other in sums):
        raise RuntimeError(f"the ranks' adapters differ (checksums {sums}); please report this as a bug")
