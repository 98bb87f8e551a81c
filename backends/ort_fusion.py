"""The fusion check: run ONNX Runtime's graph optimizer on an emitted QDQ model and report every
Q/DQ pair it left unfused. int8 that does not fuse runs slower than fp32: a DequantizeLinear left
in front of an op ONNX Runtime has an int8 kernel for means that layer silently stays float and
pays for the conversions. DQ nodes in front of float-only ops (layer norm, softmax, gelu) and at
the graph's outputs are the planned boundaries of int8 regions, counted but not faults."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

# ONNX ops ORT's CPU provider runs in int8 when their inputs (and outputs) are quantized.
INT8_CAPABLE = {"Conv", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "GlobalAveragePool", "MaxPool", "Concat",
                "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Relu", "Clip"}
QDQ = {"QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class Unfused:
    op: str  # the op that runs in float on dequantized data
    node: str  # its node name (graphopt names nodes after the layer: module path or ONNX name)
    dequantized: str  # the DequantizeLinear feeding it

    def __str__(self) -> str:
        return f"{self.op} {self.node!r} runs in float on the output of {self.dequantized!r}"


@dataclass
class FusionReport:
    kernels: Counter[str] = field(default_factory=Counter)  # op types after optimization
    unfused: list[Unfused] = field(default_factory=list)
    boundaries: int = 0  # Q/DQ left at planned float <-> int8 transitions

    @property
    def int8_kernels(self) -> int:
        return sum(c for op, c in self.kernels.items() if op.startswith(("QLinear", "QGemm", "MatMulInteger"))
                   or op in ("ConvInteger", "DynamicQuantizeMatMul"))

    def markdown(self) -> str:
        kernels = ", ".join(f"{op} x{c}" for op, c in self.kernels.most_common())
        lines = [f"- ONNX Runtime kernels after optimization: {kernels}",
                 f"- int8 kernels: {self.int8_kernels}; planned float/int8 boundaries: {self.boundaries}",
                 f"- unfused Q/DQ pairs: {len(self.unfused)}"]
        lines += [f"  - {u}" for u in self.unfused]
        return "\n".join(lines)


def check_fusion(model: onnx.ModelProto | str | os.PathLike[str], float_layers: Iterable[str] = ()) -> FusionReport:
    """Optimize `model` with ONNX Runtime (extended level, where the QDQ fusions run) and list the
    DequantizeLinear nodes left feeding an op that has an int8 kernel. `float_layers` are the layers
    mixed precision kept in float on purpose (graphopt names their ONNX nodes `layer/...`)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="graphopt-fusion-") as tmp:
        source = Path(tmp) / "model.onnx"
        if isinstance(model, onnx.ModelProto):
            onnx.save_model(model, source)
        else:
            source = Path(model)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    return fusion_report(optimized, float_layers)


def fusion_report(optimized: onnx.ModelProto, float_layers: Iterable[str] = ()) -> FusionReport:
    planned = tuple(f"{name}/" for name in float_layers)
    graph = optimized.graph
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    report = FusionReport(Counter(n.op_type for n in graph.node))
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            report.boundaries += 1
        if node.op_type != "DequantizeLinear":
            continue
        faults = [Unfused(r.op_type, r.name, node.name) for r in readers.get(node.output[0], [])
                  if r.op_type in INT8_CAPABLE and not r.name.startswith(planned)]
        report.unfused += faults
        report.boundaries += not faults
    return report
