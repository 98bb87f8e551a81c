"""Coverage: every torchvision classifier (random weights) and the real all-MiniLM-L6-v2 encoder through
every path of graphopt, checked against PyTorch eager, with torch.onnx.export (dynamo and legacy)
as the peers in the same run.

Columns: from_torch (torch.export -> IR); interpreter vs eager; to_onnx run by ONNX Runtime vs eager;
to_torch (fx GraphModule) vs eager; from_onnx(to_onnx(g)) through the interpreter vs eager; node
counts before and after `canonicalize,fold-bn` when those passes exist. A path passes when its max abs
error is within 1e-4 of the output scale (max |eager output|).

    python benchmarks/coverage.py                 # everything (about an hour on 2 cores)
    python benchmarks/coverage.py --models resnet18 minilm --no-peers

Results go to benchmarks/results/coverage.jsonl (one line a model; --resume skips done ones),
benchmarks/results/coverage.md, and the table in benchmarks/README.md."""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).parent
RESULTS = HERE / "results"
TOLERANCE = 1e-4


def relative_error(got: Any, want: np.ndarray) -> float:
    got = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def load(name: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    from graphopt import models

    if name == "minilm":
        text = models.minilm()
        return text.module, text.inputs(models.SENTENCES)
    module, x = models.torchvision_model(name)
    return module, (x,)


def check_model(name: str, peers: bool) -> dict[str, Any]:
    import onnxruntime as ort

    import graphopt as go

    row: dict[str, Any] = {"model": name}
    module, inputs = load(name)
    with torch.no_grad():
        want = module(*inputs).numpy().astype(np.float64)
    arrays = [x.numpy() for x in inputs]
    try:
        graph, row["from_torch_s"] = timed(lambda: go.from_torch(module, inputs))
    except Exception as e:
        row["error"] = f"from_torch: {type(e).__name__}: {str(e)[:300]}"
        return row
    row["nodes"] = len(graph)
    outputs, row["interp_s"] = timed(lambda: go.interpret(graph, *arrays)[0])
    row["interp_err"] = relative_error(outputs, want)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        _, row["to_onnx_s"] = timed(lambda: go.to_onnx(graph, path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
        row["ort_err"] = relative_error(session.run(None, feeds)[0], want)
        del session
        reimported, row["from_onnx_s"] = timed(lambda: go.from_onnx(path))
        row["from_onnx_err"] = relative_error(go.interpret(reimported, *arrays)[0], want)
        del reimported
    gc.collect()
    fx_module = go.to_torch(graph).eval()
    with torch.no_grad():
        row["to_torch_err"] = relative_error(fx_module(*inputs), want)
    del fx_module
    row.update(canonicalized_counts(graph))
    if peers:
        for label, dynamo in (("dynamo", True), ("legacy", False)):
            row.update(peer_export(module, inputs, label, dynamo))
    return row


def canonicalized_counts(graph: Any) -> dict[str, Any]:
    """Node count and agreement after `canonicalize,fold-bn`, once those passes are registered."""
    from graphopt.pipeline import registered_passes

    if not {"canonicalize", "fold-bn"} <= set(registered_passes()):
        return {}
    import graphopt as go

    result = go.run_pipeline(graph, "canonicalize,fold-bn")
    return {"nodes_folded": len(result.graph),
            "folded_batch_norms": sum(n.op == "batch_norm" for n in result.graph)}


def peer_export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], label: str, dynamo: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                _, seconds = timed(lambda: torch.onnx.export(module, inputs, str(Path(tmp) / "m.onnx"),
                                                             dynamo=dynamo, opset_version=18 if dynamo else 17))
            return {f"{label}_ok": True, f"{label}_s": seconds}
        except Exception as e:
            return {f"{label}_ok": False, f"{label}_error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}


def passed(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return f"{value:.1e}" if value <= TOLERANCE else f"**FAIL {value:.1e}**"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | nodes | from_torch s | interp err | ORT err | to_torch err | from_onnx err | torch.onnx dynamo s "
             "| torch.onnx legacy s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | **{r['error']}** |||||||")
            continue

        def peer(label: str, r: dict[str, Any] = r) -> str:
            if f"{label}_ok" not in r:
                return "-"
            return f"{r[f'{label}_s']:.1f}" if r[f"{label}_ok"] else "fails"

        lines.append(f"| {r['model']} | {r['nodes']} | {r['from_torch_s']:.1f} | {passed(r, 'interp_err')} "
                     f"| {passed(r, 'ort_err')} | {passed(r, 'to_torch_err')} | {passed(r, 'from_onnx_err')} "
                     f"| {peer('dynamo')} | {peer('legacy')} |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    keys = ("interp_err", "ort_err", "to_torch_err", "from_onnx_err")
    ok = [r for r in rows if "error" not in r and all(r.get(k, 1.0) <= TOLERANCE for k in keys)]
    parts = [f"{len(ok)}/{len(rows)} models pass every graphopt column"]
    for label in ("dynamo", "legacy"):
        tried = [r for r in rows if f"{label}_ok" in r]
        if tried:
            good = [r for r in tried if r[f"{label}_ok"]]
            parts.append(f"torch.onnx.export {label}: {len(good)}/{len(tried)} succeed")
            both = [r for r in good if "error" not in r]
            if both:
                ratio = np.median([r[f"{label}_s"] / (r["from_torch_s"] + r["to_onnx_s"]) for r in both])
                parts.append(f"median time of torch.onnx.export {label} / graphopt (from_torch + to_onnx): {ratio:.2f}x")
    return "; ".join(parts) + "."


def write_into_readme(text: str) -> None:
    readme = HERE / "README.md"
    start, end = "<!-- coverage:start -->", "<!-- coverage:end -->"
    body = readme.read_text()
    head, _, rest = body.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main() -> None:
    from graphopt import models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="default: every torchvision classifier and minilm")
    parser.add_argument("--no-peers", action="store_true", help="skip torch.onnx.export")
    parser.add_argument("--resume", action="store_true", help="skip models already in coverage.jsonl")
    args = parser.parse_args()
    names = args.models or [*models.torchvision_classifiers(), "minilm"]
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / "coverage.jsonl"
    done = {json.loads(line)["model"]: json.loads(line) for line in log.read_text().splitlines()} \
        if args.resume and log.exists() else {}
    if not args.resume:
        log.write_text("")
    for i, name in enumerate(names, 1):
        if name in done:
            continue
        print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        row = check_model(name, peers=not args.no_peers)
        print(f"    {time.perf_counter() - start:.0f}s {json.dumps(row)}", file=sys.stderr, flush=True)
        done[name] = row
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        gc.collect()
    rows = [done[n] for n in names if n in done]
    text = summary(rows) + "\n\n" + table(rows)
    (RESULTS / "coverage.md").write_text(text + "\n")
    if not args.models:
        write_into_readme(text)
    print(text)


if __name__ == "__main__":
    main()
