"""One training run (distill, distill with int8 gradients, or qat) on a small CNN, the same in
every process: tests/test_distill.py runs it in process and under `torchrun --nproc_per_node=2`, and
compares the trained parameters."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

import graphopt as go

PIPELINE = "prune{ratio=0.5,round-to=1},distill{epochs=2,lr=3e-3,batch-size=8,seed=3}"
PIPELINES = {"distill": PIPELINE, "int8-gradients": PIPELINE.replace("seed=3", "seed=3,gradient-bits=8"),
             "qat": "qat{epochs=2,lr=3e-3,batch-size=8,seed=3,weight-bits=4}"}


def model_and_data(dynamic_batch: bool = True) -> tuple[go.Graph, list[tuple[np.ndarray]]]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 4)).eval()
    graph = go.from_torch(net, (torch.randn(1, 1, 6, 6),), dynamic_batch=dynamic_batch)
    rng = np.random.default_rng(0)
    return graph, [(rng.standard_normal((1, 1, 6, 6)).astype(np.float32),) for _ in range(32)]


def run(dynamic_batch: bool = True, kind: str = "distill") -> tuple[dict[str, np.ndarray], object]:
    graph, data = model_and_data(dynamic_batch)
    result = go.run_pipeline(graph, PIPELINES[kind], data=data)
    return {p.name: p.data for p in result.graph.parameters}, result.records[-1].details


if __name__ == "__main__":
    import torch.distributed as dist

    kind = sys.argv[2] if len(sys.argv) > 2 else "distill"
    if kind == "rank-1-dies" and int(os.environ["RANK"]) == 1:
        sys.exit(3)  # before its first collective: rank 0 must not wait for it forever
    params, summary = run(kind="distill" if kind == "rank-1-dies" else kind)
    if dist.get_rank() == 0:
        np.savez(sys.argv[1], world=np.array(summary.world_size), losses=np.array(summary.losses),  # type: ignore[attr-defined]
                 gradient_bytes=np.array(summary.gradient_bytes), **params)  # type: ignore[attr-defined]
    dist.destroy_process_group()
