"""Where Q/DQ go: a target profile says which ops its runtime fuses into int8 kernels, and `plan`
picks, for a set of layers, the tensors to quantize so that every Q/DQ pair lands where the
runtime fuses it (a DQ feeding an op that stays float adds work instead of saving it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from graphopt.analysis.latency import ISA_NAMES, cpu_kind
from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.types import DType
from graphopt.ir.value import Value

FLOAT = (DType.float32,)


@dataclass(frozen=True)
class Profile:
    """What a runtime runs in int8. `layers` take quantized weights; `int8_ops` run on quantized
    inputs with their own output scale; `passthrough` ops move int8 data unchanged (their output
    keeps the input's scale, so the runtime drops the Q/DQ around them); `activations` fold into
    the preceding op's output quantization; `output_quantized` layers need a quantized output to
    fuse (a float-output int8 kernel exists for the others). `tables` are lookups (embeddings) whose
    table is stored int8 per row and gathered before its rows are scaled back: weight-only, their
    outputs stay float. `weight_max` bounds |int8 weights| of the layers."""

    name: str
    layers: frozenset[str]
    int8_ops: frozenset[str]
    passthrough: frozenset[str]
    activations: frozenset[str]
    output_quantized: frozenset[str]
    tables: frozenset[str] = frozenset({"embedding"})
    weight_max: int = 127


# x86 without VNNI multiplies uint8 x int8 pairwise into int16 (vpmaddubsw), which saturates once
# 255 * |w| * 2 exceeds 32767: weights keep 7 bits (|w| <= 64) so every x86 CPU computes exactly.
ORT_CPU = Profile(
    "ort-cpu",
    layers=frozenset({"conv1d", "conv2d", "linear", "matmul"}),
    int8_ops=frozenset({"add", "adaptive_avg_pool2d", "avg_pool2d", "cat"}),
    passthrough=frozenset({"max_pool2d", "reshape", "flatten", "permute", "squeeze", "unsqueeze", "dropout",
                           "identity"}),
    activations=frozenset({"relu", "relu6"}),
    output_quantized=frozenset({"conv1d", "conv2d"}),
    weight_max=64,
)
# CPUs with VNNI (AVX512-VNNI, AVX-VNNI) or ARM dot products accumulate in int32: full 8-bit weights.
ORT_CPU_VNNI = dataclasses.replace(ORT_CPU, name="ort-cpu-vnni", weight_max=127)
PROFILES = {p.name: p for p in (ORT_CPU, ORT_CPU_VNNI)}
TARGETS = ("auto", *PROFILES)

def detected_profile(isa: str) -> tuple[Profile, str]:
    """The profile for this CPU's int8 instructions, and why."""
    name = ISA_NAMES.get(isa, f"an unrecognized CPU ({isa})")
    if isa in ("avx512vnni", "avxvnni", "arm-dotprod", "arm"):
        return ORT_CPU_VNNI, f"{name} accumulates int8 products in int32, so weights keep all 8 bits"
    return ORT_CPU, (f"{name} multiplies uint8 x int8 pairs into saturating int16 (vpmaddubsw), so weights keep 7 "
                     "bits to compute exactly; target=ort-cpu-vnni gives 8-bit weights for VNNI machines")


def profile(name: str) -> tuple[Profile, str]:
    """The profile a target names (auto: the one for this machine's CPU), and why it applies."""
    if name == "auto":
        return detected_profile(cpu_kind())
    try:
        return PROFILES[name], f"target={name} asked for"
    except KeyError:
        raise GraphoptError(f"unknown quantization target {name!r}; available: {', '.join(TARGETS)}") from None


@dataclass
class Plan:
    """The layers to quantize, the lookup tables to store in int8, and the activation tensors that get a
    Q/DQ pair. `shares[v]` names the tensor whose parameters v reuses (a passthrough output takes its
    input's)."""

    layers: list[Node]
    tables: list[Node] = field(default_factory=list)
    tensors: list[Value] = field(default_factory=list)
    shares: dict[int, Value] = field(default_factory=dict)


def candidate_layers(graph: Graph, target: Profile, skip: Iterable[str] = ()) -> list[Node]:
    """The layers `target` can run in int8, minus those `skip` names (an op kind, a layer name as
    the user knows it: torch module path or ONNX node name, or a prefix of one ending at a dot)."""
    skip = tuple(skip)
    def quantizable(n: Node) -> bool:
        if n.op in target.tables:
            table = n.operands[1]
            return table.is_parameter and table.data is not None and table.dtype in FLOAT
        return n.op in target.layers and n.result.dtype in FLOAT and all(o.dtype in FLOAT for o in n.operands)

    return [n for n in graph if quantizable(n) and not n.named(skip)]


def activation_operands(node: Node) -> list[Value]:
    """The float operands that are not weights (parameters stay float or become DQ(int8))."""
    return [v for v in node.operands if v.dtype in FLOAT and not v.is_parameter]


def plan(graph: Graph, layers: Iterable[Node], target: Profile) -> Plan:
    layers = list(layers)
    chosen = {id(n) for n in layers}
    nodes = list(graph)
    # Forward: an int8 op or passthrough qualifies when every activation input comes from int8 work;
    # an activation that is the only reader of int8 work is fused into it (its Q goes after it).
    int8: set[int] = {id(n) for n in layers if n.op not in target.tables}  # tables' outputs stay float
    fused: set[int] = set()
    for n in nodes:
        ins = activation_operands(n)
        if n.op in target.activations and ins and ins[0].producer is not None and id(ins[0].producer) in int8 \
                and _activated_output(ins[0].producer, target) is n.result:
            fused.add(id(n))
        elif n.op in target.int8_ops | target.passthrough and ins and len(ins) == len(n.operands) and all(
                v.producer is not None and id(v.producer) in int8 | fused for v in ins):
            int8.add(id(n))
    # Backward: it stays only if some reader is int8 too (else the Q/DQ after it is pure cost).
    for n in reversed(nodes):
        if id(n) in int8 and id(n) not in chosen and not any(
                id(u) in int8 for u in _activated_output(n, target).users):
            int8.discard(id(n))
    result = Plan([n for n in nodes if id(n) in int8 & chosen],
                  [n for n in nodes if id(n) in chosen and n.op in target.tables])
    seen: set[int] = set()

    def add(v: Value) -> None:
        if id(v) not in seen:
            seen.add(id(v))
            result.tensors.append(v)

    for n in nodes:
        if id(n) not in int8:
            continue
        for v in activation_operands(n):
            add(v)
        out = _activated_output(n, target)
        if n.op in target.passthrough:
            result.shares[id(out)] = activation_operands(n)[0]
            add(out)
        elif n.op in target.int8_ops or n.op in target.output_quantized or any(id(u) in int8 for u in out.users):
            add(out)
    return result


def _activated_output(node: Node, target: Profile) -> Value:
    """The node's result, or that of an activation that is its only reader: the Q goes after it."""
    users = node.result.users
    if len(users) == 1 and not node.result.is_graph_output and users[0].op in target.activations:
        return users[0].result
    return node.result
