"""ONNX files with symbolic dims, as other exporters write them (named, -1, empty, `?`), and shape
arithmetic (Shape, Gather, Concat, Range, ConstantOfShape) on them: imported with the dims kept,
run by the interpreter, written back to ONNX and run by ONNX Runtime at several sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphopt as go

RNG = np.random.default_rng(0)


def _dim(d: int | str | None) -> onnx.TensorShapeProto.Dimension:
    out = onnx.TensorShapeProto.Dimension()
    if isinstance(d, int):
        out.dim_value = d
    elif d is not None:
        out.dim_param = d
    return out


def _input(name: str, dims: list[int | str | None]) -> onnx.ValueInfoProto:
    vi = helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
    vi.type.tensor_type.shape.dim.extend(_dim(d) for d in dims)
    return vi


def conv_model(dims: list[int | str | None]) -> onnx.ModelProto:
    """conv -> relu -> maxpool -> flatten by a shape the graph computes (Shape, Gather, Concat) -> add
    a position ramp (Range over the flattened length) : what paddle2onnx and tf2onnx write for a
    fully convolutional net with a dynamic size."""
    w = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    consts = [numpy_helper.from_array(np.asarray(v, np.int64), n) for n, v in
              (("zero", [0]), ("four", [4]), ("minus", [-1]), ("s0", 0), ("s1", 1))]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["p"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "four", "minus"], ["target"], axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"]),
        helper.make_node("Shape", ["flat"], ["flat_shape"]),
        helper.make_node("Gather", ["flat_shape", "s0"], ["length_0"], axis=0),
        helper.make_node("Size", ["flat"], ["size"]),
        helper.make_node("Div", ["size", "length_0"], ["per_item"]),
        helper.make_node("Div", ["per_item", "four"], ["length_1"]),
        helper.make_node("Squeeze", ["length_1"], ["length"]),
        helper.make_node("Range", ["s0", "length", "s1"], ["positions"]),
        helper.make_node("Cast", ["positions"], ["ramp"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["flat", "ramp"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "dynamic", [_input("x", dims)], [_input("y", [None, None, None])],
                              [w, *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


SIZES = [(1, 8, 8), (2, 16, 12), (1, 9, 31)]


@pytest.mark.parametrize("dims,symbols", [
    (["N", 3, "height", "width"], ["N", "height", "width"]),
    ([None, 3, None, None], ["x_0", "x_2", "x_3"]),
    (["?", 3, "p2o_DynamicDimension_1", "p2o_DynamicDimension_2"],
     ["x_0", "p2o_DynamicDimension_1", "p2o_DynamicDimension_2"]),
])
def test_symbolic_dims_are_kept_and_every_size_matches_onnx_runtime(dims: list, symbols: list[str],
                                                                    tmp_path: object) -> None:
    model = conv_model(dims)
    graph = go.from_onnx(model)
    assert graph.symbols() == symbols
    go.verify(graph)
    written = go.to_onnx(graph)
    peer = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = ort.InferenceSession(written.SerializeToString(), providers=["CPUExecutionProvider"])
    module = go.to_torch(graph)
    import torch

    for n, h, w in SIZES:
        x = RNG.standard_normal((n, 3, h, w)).astype(np.float32)
        want = peer.run(None, {"x": x})[0]
        (got,) = go.interpret(graph, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), want, rtol=1e-5, atol=1e-5)


def test_a_minus_one_dim_is_symbolic() -> None:
    model = conv_model(["N", 3, 16, 16])
    model.graph.input[0].type.tensor_type.shape.dim[2].Clear()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = -1
    graph = go.from_onnx(model)
    assert str(graph.inputs[0].type) == "float32[N, 3, x_2, 16]"


def test_input_shapes_pin_or_rename_dims() -> None:
    model = conv_model(["N", 3, "H", "W"])
    graph = go.from_onnx(model, input_shapes={"x": [1, 3, 48, None]})
    assert str(graph.inputs[0].type) == "float32[1, 3, 48, W]"
    assert go.from_onnx(model, input_shapes={"x": [None, None, "rows", None]}).symbols() == ["N", "rows", "W"]
    with pytest.raises(go.GraphoptError, match=r"input_shapes names y, which the model does not take \(its inputs: x\)"):
        go.from_onnx(model, input_shapes={"y": [1]})
    with pytest.raises(go.GraphoptError, match="pins dim 1 to 4, but the file fixes it at 3"):
        go.from_onnx(model, input_shapes={"x": [1, 4, 8, 8]})
    with pytest.raises(go.GraphoptError, match="has 2 dims but the input has rank 4"):
        go.from_onnx(model, input_shapes={"x": [1, 3]})


def test_shape_arithmetic_decided_only_at_run_time_is_a_clear_error() -> None:
    model = conv_model(["N", 3, "H", "W"])
    cast = helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT)
    model.graph.node.insert(4, cast)
    model.graph.output.append(_input("shape_f", [4]))
    with pytest.raises(go.UnsupportedError, match=r"Cast of the symbolic sizes .* pin the dims"):
        go.from_onnx(model)


def test_cli_pins_dims_of_an_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from graphopt.cli import main

    source = tmp_path / "dynamic.onnx"
    onnx.save(conv_model(["N", 3, "H", "W"]), source)
    out = tmp_path / "pinned.gir"
    assert main(["opt", str(source), "--input-shape", "x:1x3x16xwidth", "-p", "dce", "-o", str(out), "-q"]) == 0
    assert str(go.load(out).inputs[0].type) == "float32[1, 3, 16, width]"
    assert main(["opt", str(source), "--input-shape", "x:1x3x0xW", "-p", "dce", "-o", str(out), "-q"]) == 2
    assert "'0' is neither a size (1 or more), a name nor ?" in capsys.readouterr().err


@pytest.mark.parametrize("scale,attrs", [(2.0, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                                "nearest_mode": "floor"}),
                                         (1.5, {"mode": "linear", "coordinate_transformation_mode": "half_pixel"})])
def test_resize_by_scales_keeps_symbolic_sizes(scale: float, attrs: dict) -> None:
    scales = numpy_helper.from_array(np.asarray([1, 1, scale, scale], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    graph = helper.make_graph([node], "resize", [_input("x", ["N", 2, "H", "W"])], [_input("y", [None] * 4)],
                              [scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    imported = go.from_onnx(model)
    assert str(imported.outputs[0].type) == ("float32[N, 2, 2*H, 2*W]" if scale == 2 else
                                             "float32[N, 2, 3*H // 2, 3*W // 2]")
    peer = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = ort.InferenceSession(go.to_onnx(imported).SerializeToString(), providers=["CPUExecutionProvider"])
    for n, h, w in SIZES:
        x = RNG.standard_normal((n, 2, h, w)).astype(np.float32)
        want = peer.run(None, {"x": x})[0]
        np.testing.assert_allclose(go.interpret(imported, x)[0], want, atol=1e-5)
        np.testing.assert_allclose(ours.run(None, {"x": x})[0], want, atol=1e-5)


def test_shape_arithmetic_keeps_an_empty_optional_input_in_its_place() -> None:
    """Slice(shape, starts, ends, axes="", steps): the steps are not read as the axes."""
    consts = [numpy_helper.from_array(np.asarray(v, np.int64), n)
              for n, v in (("starts", [3]), ("ends", [0]), ("steps", [-1]), ("zero", [0]))]
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "starts", "ends", "", "steps"], ["reversed"]),
             helper.make_node("Concat", ["zero", "reversed"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    graph = helper.make_graph(nodes, "g", [_input("x", ["N", 3, "H", "W"])], [_input("y", [None] * 4)], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    imported = go.from_onnx(model)
    assert str(imported.outputs[0].type) == "float32[N, W, H, 3]"
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(go.interpret(imported, x)[0], want)
