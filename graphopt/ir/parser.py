"""Reads the text form back (see graphopt.ir.printer). Result types are re-inferred and must match
the printed ones, so a hand-edited golden file with a wrong shape fails at its line."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from graphopt.errors import GraphoptError, ParseError, ShapeError
from graphopt.ir.graph import Graph
from graphopt.ir.symbolic import Dim, parse_dim
from graphopt.ir.types import DType, TensorType
from graphopt.ir.value import Value

_TOKEN = re.compile(
    r"""(?P<skip>[ \t\r\n]+|\#[^\n]*)
    |(?P<type>[a-z]+[0-9]*\[[^\[\]]*\])
    |(?P<name>%(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.\-/]+))
    |(?P<string>"(?:[^"\\]|\\.)*")
    |(?P<number>-inf\b|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<punct>[(){}\[\],=:])""",
    re.VERBOSE,
)
_KEYWORDS: dict[str, Any] = {"true": True, "false": False, "none": None, "inf": float("inf"),
                             "nan": float("nan")}


class _Token:
    __slots__ = ("kind", "pos", "text")

    def __init__(self, kind: str, text: str, pos: int) -> None:
        self.kind, self.text, self.pos = kind, text, pos


class Parser:
    def __init__(self, text: str, weights: Mapping[str, np.ndarray] | None) -> None:
        self.text = text
        self.weights = weights
        self.tokens = self._tokenize()
        self.i = 0
        self.values: dict[str, Value] = {}

    # --- tokens ---------------------------------------------------------------------------------
    def _tokenize(self) -> list[_Token]:
        tokens, pos = [], 0
        while pos < len(self.text):
            m = _TOKEN.match(self.text, pos)
            if m is None:
                self._fail(f"unexpected character {self.text[pos]!r}", pos)
            if m.lastgroup != "skip":
                tokens.append(_Token(m.lastgroup or "", m.group(), pos))
            pos = m.end()
        tokens.append(_Token("eof", "", len(self.text)))
        return tokens

    def _fail(self, message: str, pos: int | None = None) -> Any:
        pos = self.tokens[self.i].pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        source = self.text[start : end if end >= 0 else len(self.text)]
        raise ParseError(f"line {line}, col {pos - start + 1}: {message}\n  {source}\n  {' ' * (pos - start)}^")

    @property
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def _next(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _expect(self, kind: str, text: str | None = None) -> _Token:
        tok = self.peek
        if tok.kind != kind or (text is not None and tok.text != text):
            want = repr(text) if text else kind
            self._fail(f"expected {want}, found {tok.text!r}" if tok.text else f"expected {want}, found end of text")
        return self._next()

    def _accept(self, text: str) -> bool:
        if self.peek.text == text and self.peek.kind in ("punct", "ident"):
            self.i += 1
            return True
        return False

    def _list(self, close: str, item: Any) -> list[Any]:
        items = []
        if not self._accept(close):
            items.append(item())
            while self._accept(","):
                items.append(item())
            self._expect("punct", close)
        return items

    # --- grammar ------------------------------------------------------------------------------------
    def parse(self) -> Graph:
        self._expect("ident", "graph")
        tok = self._next()
        if tok.kind not in ("ident", "string"):
            self._fail("expected a graph name", tok.pos)
        graph = Graph(json.loads(tok.text) if tok.kind == "string" else tok.text)
        self._expect("punct", "(")
        for name, type_, pos in self._list(")", self._typed_name):
            self._define(name, graph.add_input(type_, name), pos)
        self._expect("punct", "{")
        while self.peek.text == "param" and self.peek.kind == "ident":
            self._parameter(graph)
        while self.peek.kind == "name":
            self._node(graph)
        self._expect("ident", "return")
        outputs = [self._use()]
        while self._accept(","):
            outputs.append(self._use())
        graph.outputs = outputs
        self._expect("punct", "}")
        self._expect("eof")
        return graph

    def _typed_name(self) -> tuple[str, TensorType, int]:
        tok = self._expect("name")
        self._expect("punct", ":")
        return _name(tok.text), self._type(), tok.pos

    def _type(self) -> TensorType:
        """`float32[N, 3, H, (W + 1) // 2]`: one token, its dims split at the top-level commas."""
        tok = self._expect("type")
        name, _, inside = tok.text[:-1].partition("[")
        try:
            dtype = DType(name)
        except ValueError:
            self._fail(f"unknown dtype {name!r}", tok.pos)
        dims, depth, start = [], 0, 0
        for i, char in enumerate(inside + ","):
            depth += (char == "(") - (char == ")")
            if char == "," and depth == 0:
                if inside[start:i].strip() or dims or i < len(inside):
                    dims.append(self._dim(inside[start:i], tok.pos + len(name) + 1 + start))
                start = i + 1
        return TensorType(dtype, dims)

    def _dim(self, text: str, pos: int) -> Dim:
        try:
            return parse_dim(text)
        except ShapeError as e:
            return self._fail(str(e), pos)

    def _parameter(self, graph: Graph) -> None:
        self._expect("ident", "param")
        name, type_, pos = self._typed_name()
        self._expect("punct", "=")
        value = graph.declare_parameter(type_, name)
        if self.peek.text == "npz":
            self._next()
            self._expect("punct", "(")
            key = json.loads(self._expect("string").text)
            self._expect("punct", ")")
            if self.weights is not None:
                if key not in self.weights:
                    self._fail(f"weights have no array {key!r} for parameter %{name}", pos)
                self._set_data(value, np.asarray(self.weights[key]), pos)
        else:
            start = self._expect("punct", "[").pos
            flat = self._list("]", self._attr_value)
            try:
                array = np.array(flat, dtype=type_.dtype.numpy).reshape(type_.shape)
            except (ValueError, TypeError) as e:
                self._fail(f"data of %{name} does not fit {type_}: {e}", start)
            self._set_data(value, array, start)
        self._define(name, value, pos)

    def _set_data(self, value: Value, array: np.ndarray, pos: int) -> None:
        try:
            value.data = array
        except GraphoptError as e:
            self._fail(str(e), pos)

    def _node(self, graph: Graph) -> None:
        start = self.peek.pos
        results = [self._typed_name()]
        while self._accept(","):
            results.append(self._typed_name())
        self._expect("punct", "=")
        op_tok = self._expect("ident")
        self._expect("punct", "(")
        operands = self._list(")", self._use)
        attrs: dict[str, Any] = {}
        if self._accept("{"):
            for key, val in self._list("}", self._attr):
                attrs[key] = val
        loc = ""
        if self._accept("loc"):
            self._expect("punct", "(")
            loc = json.loads(self._expect("string").text)
            self._expect("punct", ")")
        try:
            node = graph.create(op_tok.text, operands, attrs, loc=loc, names=[r[0] for r in results])
        except GraphoptError as e:
            self._fail(str(e), op_tok.pos)
        inferred = [r.type for r in node.results]
        printed = [r[1] for r in results]
        if inferred != printed:
            shown = ", ".join(map(str, inferred))
            self._fail(f"{op_tok.text} result types {', '.join(map(str, printed))} differ from inferred {shown}",
                       start)
        for (name, _, pos), value in zip(results, node.results):
            self._define(name, value, pos)

    def _attr(self) -> tuple[str, Any]:
        key = self._expect("ident").text
        self._expect("punct", "=")
        return key, self._attr_value()

    def _attr_value(self) -> Any:
        tok = self._next()
        if tok.kind == "punct" and tok.text == "[":
            return self._list("]", self._attr_value)
        if tok.kind == "number":
            is_float = any(c in tok.text for c in ".eEn")
            return float(tok.text) if is_float else int(tok.text)
        if tok.kind == "string":
            return json.loads(tok.text)
        if tok.kind == "ident":
            return _KEYWORDS.get(tok.text, tok.text)
        return self._fail(f"expected a value, found {tok.text!r}", tok.pos)

    def _use(self) -> Value:
        tok = self._expect("name")
        name = _name(tok.text)
        if name not in self.values:
            self._fail(f"%{name} is used before it is defined", tok.pos)
        return self.values[name]

    def _define(self, name: str, value: Value, pos: int) -> None:
        if name in self.values:
            self._fail(f"%{name} is defined twice", pos)
        self.values[name] = value


def _name(token: str) -> str:
    body = token[1:]
    return json.loads(body) if body.startswith('"') else body


def parse(text: str, weights: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Read a graph from its text form. `weights` supplies the arrays of `npz("key")` parameters;
    without it they are declared but hold no data."""
    return Parser(text, weights).parse()
