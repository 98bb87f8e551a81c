"""torch.distributed for graphopt's work, as torchrun launches it: which rank this process is, and
gathering each rank's share of a split job. Outside torchrun (WORLD_SIZE unset or 1) there is one
rank and torch.distributed is never imported."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any


def ranks() -> tuple[int, int]:
    """(rank, world size); joins the process group torchrun describes (gloo on the CPU, nccl with
    CUDA). A collective that waits on a rank that died fails after GRAPHOPT_DIST_TIMEOUT seconds
    (default 300) instead of hanging; torchrun then stops every process and reports the one that
    failed first."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        timeout = timedelta(seconds=float(os.environ.get("GRAPHOPT_DIST_TIMEOUT", "300")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def gather(share: Any, world: int) -> list[Any]:
    """Every rank's `share` (picklable), in rank order, on every rank."""
    if world == 1:
        return [share]
    import torch.distributed as dist

    shares: list[Any] = [None] * world
    dist.all_gather_object(shares, share)
    return shares
