"""The int8 benchmark runs end to end in CI on its small model (the digits CNN it trains), every peer
included; the full table (torchvision CNNs, MiniLM) runs on demand: python benchmarks/bench_int8.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bench_int8


def test_int8_benchmark_on_the_digits_cnn(tmp_path) -> None:
    rows, fusion = bench_int8.run_case(bench_int8.digits_case(), 1, tmp_path)
    by_method = {r.method: r for r in rows}
    fp32, ours = by_method["PyTorch eager fp32"], by_method["graphopt int8"]
    assert fp32.accuracy > 0.95
    assert ours.accuracy >= fp32.accuracy - 0.005  # the target: within half a point of fp32
    assert ours.size_mb < by_method["ORT fp32"].size_mb / 2 and ours.cos_min > 0.99
    assert "unfused Q/DQ pairs: 0" in fusion
    assert all(len(r.latency) == 4 for r in rows if not r.note.startswith("failed")), bench_int8.table("digits", rows)
