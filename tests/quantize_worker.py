"""One mixed-precision quantize run whose layer sensitivity is measured, the same in every process:
tests/test_quantize.py runs it in process and under `torchrun --nproc_per_node=2` (the ranks split
the layers) and compares the rankings."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

import graphopt as go

PIPELINE = "canonicalize,fold-bn,fuse-activation,quantize{budget=60,sensitivity=always}"


def run() -> list[tuple[str, float, int]]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    graph = go.from_torch(net, (torch.randn(1, 3, 8, 8),))
    rng = np.random.default_rng(0)
    samples = [(rng.standard_normal((1, 3, 8, 8)).astype(np.float32),) for _ in range(8)]
    summary = go.run_pipeline(graph, PIPELINE, calibration=samples).records[-1].details
    return [(s.layer, s.sqnr_db, s.rank) for s in summary.sensitivity]


if __name__ == "__main__":
    import torch.distributed as dist

    scores = run()
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": dist.get_world_size(), "scores": scores}, f)
    dist.destroy_process_group()
