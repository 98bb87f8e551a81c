"""Running a graph fast for calibration, sensitivity and rounding searches: on ONNX Runtime with
only its basic, exact rewrites (redundant nodes removed, conv + add folded: 12% faster on
all-MiniLM-L6-v2 than none) and none of its Q/DQ fusions, so each quantize/dequantize pair runs as
the numpy interpreter runs it and the results agree with it up to float rounding, at a small
fraction of its time. The weights are fed as inputs rather than copied into the model, since a
search builds one model per candidate. Where the graph does not lower to ONNX the interpreter runs it instead (the
oracle the tests compare this runner to)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.interp import Interpreter
from graphopt.ir.graph import Graph
from graphopt.ir.node import Node
from graphopt.ir.value import Value


class _Capturing(Interpreter):
    def __init__(self, graph: Graph, observed: Sequence[Value]) -> None:
        super().__init__(graph)
        self.wanted = {id(v) for v in observed}
        self.seen: dict[int, np.ndarray] = {}

    def run_node(self, node: Node, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        results = super().run_node(node, args)
        for value, array in zip(node.results, results):
            if id(value) in self.wanted:
                self.seen[id(value)] = array
        return results


class Runner:
    """`run(*sample)` gives the graph's outputs and the arrays of `observed` (node results) on one
    sample. `backend` says which engine runs it and, for the interpreter, why; `oracle=True` asks
    for the interpreter."""

    def __init__(self, graph: Graph, observed: Sequence[Value] = (), *, oracle: bool = False) -> None:
        self.graph, self.observed = graph, list(observed)
        self.session: Any = None
        if oracle:
            self.backend = "interpreter (asked for)"
            return
        try:
            self._start_session()
            self.backend = "onnxruntime"
        except Exception as e:  # a lowering refusal, or any of ONNX Runtime's error types
            self.backend = f"interpreter ({type(e).__name__}: {str(e).splitlines()[0][:160]})"

    def _start_session(self) -> None:
        import onnxruntime as ort
        from onnx import helper

        from graphopt.backends.onnx import OPSET, OnnxEmitter, onnx_dtype

        emitter = OnnxEmitter(self.graph, parameters_as_inputs=True)
        model = emitter.build(OPSET)
        produced = {name for node in model.graph.node for name in node.output}
        outputs = [o.name for o in model.graph.output]
        for v in self.observed:
            name = emitter.name(v)
            if name not in produced:
                raise GraphoptError(f"%{v.name} is not a tensor of the ONNX model")
            if name not in outputs:
                model.graph.output.append(helper.make_tensor_value_info(name, onnx_dtype(v.dtype), None))
                outputs.append(name)
        self._fetch = [emitter.name(v) for v in self.observed]
        self._count = len(self.graph.outputs)
        self._inputs = [emitter.name(v) for v in self.graph.inputs]
        declared = {v.name for v in model.graph.input}
        self._weights = {emitter.name(p): np.ascontiguousarray(p.data) for p in self.graph.parameters
                         if emitter.name(p) in declared}
        self._weight_names = {id(p): emitter.name(p) for p in self.graph.parameters if emitter.name(p) in declared}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)  # torchrun: 1 a process
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.add_session_config_entry("session.disable_quant_qdq", "1")  # Q/DQ pairs run as written
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._names = outputs

    def run(self, *inputs: np.ndarray, weights: Mapping[int, np.ndarray] | None = None,
            ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """`weights` (arrays by id of a parameter) run in place of those parameters' data, for
        searches that try one weight at a time without building a model each."""
        if self.session is None:
            graph, observed = self.graph, self.observed
            if weights:
                graph, mapping = self.graph.clone_with_mapping()
                observed = [mapping[id(v)] for v in self.observed]
                for p in self.graph.parameters:
                    if id(p) in weights:
                        mapping[id(p)].data = weights[id(p)]
            interp = _Capturing(graph, observed)
            outputs = interp.run(*inputs)
            return outputs, [interp.seen[id(v)] for v in observed]
        feeds = dict(self._weights)
        feeds.update((self._weight_names[k], np.ascontiguousarray(a)) for k, a in (weights or {}).items()
                     if k in self._weight_names)
        feeds.update(zip(self._inputs, inputs))
        arrays = dict(zip(self._names, self.session.run(self._names, feeds)))
        return [arrays[n] for n in self._names[:self._count]], [arrays[n] for n in self._fetch]
