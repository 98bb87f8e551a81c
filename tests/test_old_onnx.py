"""ONNX files as older and other exporters write them: opset 7 to 10 (upgraded by onnx's version
converter), initializers listed as graph inputs, variadic Sum/Mean/Max/Min, LRN, Dropout with its
mask output, pooling with auto_pad SAME and asymmetric pads, 1-d pooling, 3-d convolution, Gemm
with a [1, n] bias, and the elementwise ops CNN exporters emit. Each model is checked against
ONNX Runtime running the original file, through the interpreter, to_onnx and to_torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import graphopt as go

RNG = np.random.default_rng(0)


def weight(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
    data = RNG.standard_normal(shape).astype(np.float32) * 0.3
    return numpy_helper.from_array(np.abs(data) + 0.5 if positive else data, name)


def model_of(nodes: list[onnx.NodeProto], x_shape: list[int], inits: list[onnx.TensorProto], opset: int = 17,
             inits_as_inputs: bool = False, out_rank: int | None = None) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if inits_as_inputs:  # IR version 3: every initializer is a graph input too
        inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in inits]
    unknown = [None] * (len(x_shape) if out_rank is None else out_rank)  # dims left to the importer
    graph = helper.make_graph(nodes, "m", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, unknown)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 3 if inits_as_inputs else 8
    return model


def check_against_onnx_runtime(model: onnx.ModelProto, x: np.ndarray, atol: float = 1e-5) -> go.Graph:
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = go.from_onnx(model)
    go.verify(graph)
    np.testing.assert_allclose(go.interpret(graph, x)[0], want, atol=atol, rtol=1e-5)
    ours = ort.InferenceSession(go.to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ours.run(None, {"x": x})[0], want, atol=atol, rtol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(go.to_torch(graph)(torch.from_numpy(x)).numpy(), want, atol=atol, rtol=1e-5)
    return graph


def caffe_era_model(opset: int) -> onnx.ModelProto:
    inits = [weight("w1", 8, 3, 3, 3), weight("scale", 8), weight("bias", 8), weight("mean", 8),
             weight("var", 8, positive=True), weight("slope", 8, 1, 1), weight("w2", 8, 8, 1, 1), weight("fc", 10, 8),
             weight("fcb", 1, 10)]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], auto_pad="SAME_UPPER", strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "scale", "bias", "mean", "var"], ["b1"], epsilon=1e-5),
        helper.make_node("PRelu", ["b1", "slope"], ["p1"]),
        helper.make_node("LRN", ["p1"], ["l1"], size=3, alpha=1e-4, beta=0.75, bias=1.0),
        helper.make_node("MaxPool", ["l1"], ["m1"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["m1", "w2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Sum", ["m1", "r2", "m1"], ["s"]),
        helper.make_node("Mean", ["s", "m1"], ["mn"]),
        helper.make_node("Max", ["mn", "r2", "s"], ["mx"]),
        helper.make_node("Dropout", ["mx"], ["d", "dmask"], ratio=0.3),
        helper.make_node("GlobalAveragePool", ["d"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y0"], transB=1),
        helper.make_node("Softmax", ["y0"], ["y"], axis=1),
    ]
    return model_of(nodes, [1, 3, 32, 32], inits, opset=opset, inits_as_inputs=True, out_rank=2)


@pytest.mark.parametrize("opset", [7, 9, 10])
def test_an_old_opset_is_upgraded_and_says_so(opset: int) -> None:
    model = caffe_era_model(opset)
    with pytest.warns(UserWarning, match=f"ONNX opset {opset} upgraded to 13 with onnx.version_converter"):
        go.from_onnx(model)
    graph = check_against_onnx_runtime(model, RNG.standard_normal((1, 3, 32, 32)).astype(np.float32))
    assert any(n.op == "linear" for n in graph)  # the [1, 10] Gemm bias did not stop the linear layer


def test_the_caffe_era_model_quantizes() -> None:
    model = caffe_era_model(9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = go.from_onnx(model)
    samples = [(RNG.standard_normal((1, 3, 32, 32)).astype(np.float32),) for _ in range(4)]
    int8 = go.run_pipeline(graph, "canonicalize,fold-bn,fuse-activation,quantize", calibration=samples).graph
    session = ort.InferenceSession(go.to_onnx(int8).SerializeToString(), providers=["CPUExecutionProvider"])
    x = RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)
    want, got = go.interpret(graph, x)[0], session.run(None, {"x": x})[0]
    assert np.abs(got - want).max() < 0.05 and got.argmax() == want.argmax()


def test_opsets_older_than_onnx_runtime_runs_are_refused() -> None:
    model = caffe_era_model(9)
    model.opset_import[0].version = 6
    with pytest.raises(go.UnsupportedError, match="opset 6 is older than 7, the oldest ONNX Runtime runs"):
        go.from_onnx(model)


@pytest.mark.parametrize("op,attrs", [("Selu", {"alpha": 1.5, "gamma": 1.1}), ("Celu", {"alpha": 0.7}),
                                      ("Shrink", {"bias": 0.2, "lambd": 0.4}), ("ThresholdedRelu", {"alpha": 0.3}),
                                      ("Softsign", {}), ("Sign", {}), ("Floor", {}), ("Ceil", {})])
def test_elementwise_ops_of_cnn_exporters(op: str, attrs: dict) -> None:
    model = model_of([helper.make_node(op, ["x"], ["y"], **attrs)], [2, 3, 4, 5], [])
    check_against_onnx_runtime(model, RNG.standard_normal((2, 3, 4, 5)).astype(np.float32) * 2)


@pytest.mark.parametrize("node", [
    helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_LOWER"),
    helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], pads=[0, 1, 1, 0]),
    helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[0, 0, 1, 2]),
    helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[0, 0, 1, 2], count_include_pad=1),
    helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    helper.make_node("LRN", ["x"], ["y"], size=5, alpha=0.01, beta=0.5, bias=2.0),
], ids=["max-same-lower", "max-asymmetric", "avg-asymmetric", "avg-asymmetric-counted", "avg-same-upper", "lrn"])
def test_pooling_and_lrn_as_exporters_write_them(node: onnx.NodeProto) -> None:
    check_against_onnx_runtime(model_of([node], [2, 6, 9, 11], []), RNG.standard_normal((2, 6, 9, 11)).astype(np.float32))


def test_an_even_lrn_window_follows_onnx_in_every_backend() -> None:
    """ONNX Runtime refuses an even size; the spec puts the extra channel after c, torch before."""
    graph = go.from_onnx(model_of([helper.make_node("LRN", ["x"], ["y"], size=4, alpha=0.5)], [1, 6, 2, 2], []))
    x = RNG.standard_normal((1, 6, 2, 2)).astype(np.float32)
    squares = np.pad(x**2, [(0, 0), (1, 2), (0, 0), (0, 0)])
    window = sum(squares[:, i : i + 6] for i in range(4))  # channels c-1 .. c+2
    want = x / (1 + 0.5 / 4 * window) ** 0.75
    np.testing.assert_allclose(go.interpret(graph, x)[0], want, rtol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(go.to_torch(graph)(torch.from_numpy(x)).numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("node", [
    helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3], strides=[2], pads=[1, 0]),
    helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[4], auto_pad="SAME_UPPER"),
])
def test_one_dimensional_pooling(node: onnx.NodeProto) -> None:
    check_against_onnx_runtime(model_of([node], [2, 4, 13], []), RNG.standard_normal((2, 4, 13)).astype(np.float32))


@pytest.mark.parametrize("node", [
    helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 3, 3], strides=[1, 2, 2], pads=[0, 1, 1, 1, 1, 0]),
    helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 2, 3], strides=[2, 1, 2], pads=[1, 0, 1, 1, 1, 0]),
    helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2, 2], strides=[2, 2, 2], ceil_mode=1),
])
def test_three_dimensional_pooling(node: onnx.NodeProto) -> None:
    x = RNG.standard_normal((2, 3, 5, 7, 9)).astype(np.float32)
    check_against_onnx_runtime(model_of([node], [2, 3, 5, 7, 9], []), x)


def test_three_dimensional_convolution() -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3, 3], pads=[1, 1, 1, 1, 1, 1], strides=[1, 2, 2])
    graph = check_against_onnx_runtime(model_of([node], [1, 2, 5, 8, 8], [weight("w", 4, 2, 3, 3, 3)]),
                                       RNG.standard_normal((1, 2, 5, 8, 8)).astype(np.float32))
    assert [n.op for n in graph] == ["conv3d"]


def test_a_dropout_mask_that_is_read_is_a_clear_error() -> None:
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"]), helper.make_node("Cast", ["mask"], ["m"], to=1),
             helper.make_node("Add", ["d", "m"], ["y"])]
    with pytest.raises(go.UnsupportedError, match="Dropout mask output is read by the model"):
        go.from_onnx(model_of(nodes, [2, 3], []))


LIGHT_ZOO = sorted((Path(onnx.__file__).parent / "backend" / "test" / "data" / "light").glob("light_*.onnx"))


def with_random_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The onnx package's 'light' model zoo builds each weight with ConstantOfShape of one value,
    which makes every output the same; random initializers of those shapes make the check bite."""
    rng = np.random.default_rng(0)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    kept, made = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in consts:
            shape = [int(d) for d in consts[node.input[0]]]
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            values = np.abs(rng.standard_normal(shape)) + 0.5 if len(shape) == 1 else \
                rng.standard_normal(shape) / np.sqrt(fan_in)  # 1-d: batch-norm scales and variances stay positive
            made.append(numpy_helper.from_array(values.astype(np.float32), node.output[0]))
        else:
            kept.append(node)
    model.graph.ClearField("node")
    model.graph.node.extend(kept)
    model.graph.initializer.extend(made)
    model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in made)  # IR v3
    return model


@pytest.mark.parametrize("path", LIGHT_ZOO, ids=[p.stem for p in LIGHT_ZOO])
def test_the_classic_model_zoo_shipped_with_onnx_imports_and_matches(path: Path) -> None:
    """Caffe2-era exports (opset 9, IR version 3, initializers listed as inputs) as the onnx pip
    package ships them, run against ONNX Runtime on the same file."""
    model = with_random_weights(onnx.load(str(path)))
    inits = {i.name for i in model.graph.initializer}
    data = next(i for i in model.graph.input if i.name not in inits)
    x = RNG.standard_normal([d.dim_value for d in data.type.tensor_type.shape.dim]).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {data.name: x})[0]
    assert want.std() > 1e-4  # the outputs differ from item to item
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = go.from_onnx(model)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(go.interpret(graph, x)[0], want, atol=1e-4 * scale)
    ours = ort.InferenceSession(go.to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ours.run(None, {graph.inputs[0].name: x})[0], want, atol=1e-4 * scale)


def test_sequence_and_string_ops_are_out_of_scope_with_a_clear_error() -> None:
    nodes = [helper.make_node("SequenceConstruct", ["x", "x"], ["s"]),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)]
    with pytest.raises(go.UnsupportedError, match="SequenceConstruct works on sequences, optionals or strings"):
        go.from_onnx(model_of(nodes, [2, 3], []))
