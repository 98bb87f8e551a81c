"""One mixed-precision quantize run whose layer sensitivity is measured, the same in every process:
tests/test_quantize.py runs it in process and under `torchrun --nproc_per_node=2` (the ranks split
the calibration samples and the layers) and compares the calibrated scales and the rankings."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

import graphopt as go

PIPELINE = "canonicalize,fold-bn,fuse-activation,quantize{budget=60,sensitivity=always}"


def run() -> dict[str, object]:
    """The sensitivity ranking (layer, dB, rank that measured it), every tensor's calibrated range
    and histogram digest, and the rank that ran each calibration sample."""
    import hashlib

    from graphopt.quant import Calibration, observe_range
    from graphopt.quant.calibration import tracked_values

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    graph = go.from_torch(net, (torch.randn(1, 3, 8, 8),))
    rng = np.random.default_rng(0)
    samples = [(rng.standard_normal((1, 3, 8, 8)).astype(np.float32) * (1 + k),) for k in range(9)]
    calibration = Calibration(samples)
    summary = go.run_pipeline(graph, PIPELINE, calibration=calibration).records[-1].details
    stats = calibration.statistics(graph)
    ranges = {v.name: [*observe_range(stats.of(v), "percentile", 255),
                       hashlib.sha256(stats.of(v).counts.tobytes()).hexdigest()] for v in tracked_values(graph)}
    return {"sensitivity": [(s.layer, s.sqnr_db, s.rank) for s in summary.sensitivity], "ranges": ranges,
            "ran_by": stats.ran_by}


if __name__ == "__main__":
    import torch.distributed as dist

    result = run()
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": dist.get_world_size(), **result}, f)
    dist.destroy_process_group()
