"""Packed weights: the int8 weights that DequantizeLinear nodes read (directly, or through the
Transpose a MatMul-lowered linear adds) stored in the narrowest ONNX integer type that holds their
values exactly -- INT2 (four a byte, opset 25) for ternary and binary weights, INT4 (two a byte,
opset 21) for 4-bit ones -- behind a Cast back to int8. The file is as small as the bits say; ONNX
Runtime folds each Cast into an int8 constant when it loads the model, so the Q/DQ fusions into its
integer kernels (QLinearConv, QGemm, ...) happen as for the unpacked file and memory at run time is
int8's. (Feeding DequantizeLinear INT2 / INT4 directly does not work: ONNX Runtime 1.32 fuses those
into QLinearConv / QGemm too, then refuses the model.) Lossless: the values stay what they were."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

from graphopt.errors import GraphoptError

PACKED_OPSET = 25  # the first with INT2 (INT4 came in 21)
NARROW = ((2, ml_dtypes.int2), (4, ml_dtypes.int4))


@dataclass(frozen=True)
class Packing:
    bits: dict[str, int]  # packed weight (its int8 name) -> its bits
    bytes_before: int  # those weights' bytes in int8
    bytes_after: int  # and packed


def pack_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Packing]:
    """A copy of `model` at opset PACKED_OPSET (or its own, if later) with every int8 weight initializer
    whose values fit INT2 or INT4 stored so, behind a Cast to int8, where that makes the file smaller;
    `model` itself is left as it was."""
    packed = _at_packed_opset(model)
    graph = packed.graph
    inits = {t.name: t for t in graph.initializer}
    weights = dict.fromkeys(n.input[0] for n in graph.node if n.op_type in ("DequantizeLinear", "Transpose"))
    bits: dict[str, int] = {}
    before = after = 0
    unpack = []
    for name in weights:
        weight = inits.get(name)
        if weight is None or weight.data_type != TensorProto.INT8:
            continue
        values = numpy_helper.to_array(weight)
        fit = next(((b, kind) for b, kind in NARROW if values.size and int(ml_dtypes.iinfo(kind).min) <= values.min()
                    and values.max() <= int(ml_dtypes.iinfo(kind).max)), None)
        if fit is None:
            continue
        narrow = numpy_helper.from_array(values.astype(fit[1]), f"{name}.packed_int{fit[0]}")
        cast = helper.make_node("Cast", [narrow.name], [name], name=f"{name}/unpack", to=TensorProto.INT8)
        if narrow.ByteSize() + cast.ByteSize() >= weight.ByteSize():  # a few values: the names cost more
            continue
        before, after = before + weight.ByteSize(), after + narrow.ByteSize() + cast.ByteSize()
        graph.initializer.remove(weight)
        graph.initializer.append(narrow)
        unpack.append(cast)
        bits[name] = fit[0]
    nodes = [*unpack, *graph.node]  # they read only initializers: first keeps the graph in order
    del graph.node[:]
    graph.node.extend(nodes)
    return packed, Packing(bits, before, after)


def _at_packed_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= PACKED_OPSET:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        return version_converter.convert_version(model, PACKED_OPSET)
    except Exception as e:  # the converter's errors share no type
        raise GraphoptError(f"packed weights need ONNX opset {PACKED_OPSET} (INT2 / INT4 tensors); converting this "
                            f"opset-{opset} model failed ({str(e).splitlines()[0][:200]}); write it unpacked") from None
