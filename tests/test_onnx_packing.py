"""Packed weight storage (to_onnx(packed=True)): int8 weights behind DequantizeLinear go to INT2 / INT4
where their values fit, ONNX Runtime's outputs stay what they were, and the model passed in is left
untouched. On generated layer graphs at ternary and 4-bit weights, and on a hand-built edge case."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from graphopt.backends.onnx_packing import pack_weights
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.testing import graphs_with_inputs
from tests.helpers import LAYER_OPS


def run(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


@settings(max_examples=25, deadline=None)
@given(graphs_with_inputs(max_nodes=8, ops=LAYER_OPS), st.sampled_from([("ternary", TensorProto.INT2),
                                                                       ("4", TensorProto.INT4)]))
def test_packing_is_lossless_and_narrows_every_low_bit_weight(case, width) -> None:
    (graph, inputs), (bits, narrow) = case, width
    folded = graphopt.run_pipeline(graph, "fold-bn").graph
    assume(not any(n.op == "batch_norm" for n in folded))
    quantized = graphopt.run_pipeline(folded, f"qat{{epochs=0,weight-bits={bits}}}", data=[tuple(inputs)]).graph
    model = graphopt.to_onnx(quantized)
    before = model.SerializeToString()
    packed, packing = pack_weights(model)
    assert model.SerializeToString() == before  # the caller's model is not changed
    onnx.checker.check_model(packed)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    read = {n.input[0] for n in model.graph.node if n.op_type in ("DequantizeLinear", "Transpose")}
    fits = {name for name in read if name in inits and inits[name].dtype == np.int8 and inits[name].size >= 256
            and inits[name].min() >= -8 and inits[name].max() <= 7}
    kinds = {t.name: t.data_type for t in packed.graph.initializer}
    assert set(packing.bits) >= fits and packing.bytes_after < packing.bytes_before + (not packing.bits)
    for name in packing.bits:
        two = inits[name].min() >= -2 and inits[name].max() <= 1
        assert kinds[f"{name}.packed_int{2 if two else 4}"] == (TensorProto.INT2 if two else narrow)
    for want, got in zip(run(model, inputs), run(packed, inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_weights_that_fit_are_packed_and_the_rest_kept() -> None:
    """Weights read by dequantize nodes pack to the narrowest type their values fit (one also read by
    another op too: the Cast gives it the int8 tensor back); wider values and zero points stay int8."""
    rng = np.random.default_rng(0)
    small = numpy_helper.from_array(rng.integers(-1, 2, (2, 256)).astype(np.int8), "small")
    wide = numpy_helper.from_array(rng.integers(-100, 100, (2, 256)).astype(np.int8), "wide")
    read = numpy_helper.from_array(rng.integers(-2, 2, (2, 256)).astype(np.int8), "read")
    zero = numpy_helper.from_array(np.zeros(2, np.int8), "zero")
    scale = numpy_helper.from_array(np.full(2, 0.5, np.float32), "scale")
    nodes = [helper.make_node("DequantizeLinear", [w, "scale", "zero"], [f"{w}_f"], axis=0) for w in ("small", "wide")]
    nodes += [helper.make_node("DequantizeLinear", ["read", "scale", "zero"], ["read_f"], axis=0),
              helper.make_node("Cast", ["read"], ["read_cast"], to=TensorProto.FLOAT),
              helper.make_node("Sum", ["small_f", "wide_f", "read_f", "read_cast"], ["y"])]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 256])],
                              [small, wide, read, zero, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    packed, packing = pack_weights(model)
    assert packing.bits == {"small": 2, "read": 2}
    kinds = {t.name: t.data_type for t in packed.graph.initializer}
    assert kinds["small.packed_int2"] == kinds["read.packed_int2"] == TensorProto.INT2
    assert kinds["wide"] == kinds["zero"] == TensorProto.INT8
    np.testing.assert_array_equal(run(packed, [])[0], run(model, [])[0])


def test_a_model_the_converter_cannot_lift_gets_a_clear_error() -> None:
    node = helper.make_node("Upsample", ["x", "s"], ["y"], mode="nearest")  # removed after opset 9
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    try:
        pack_weights(model)
    except graphopt.GraphoptError as e:
        assert "write it unpacked" in str(e)
    else:  # the converter lifted it: the result must still be a valid model
        onnx.checker.check_model(pack_weights(model)[0])
