"""Coverage: every torchvision classifier (random weights) and the real all-MiniLM-L6-v2 encoder through
every path of graphopt, checked against PyTorch eager, with torch.onnx.export (dynamo and legacy)
as the peers in the same run.

Columns: from_torch (torch.export -> IR); interpreter vs eager; to_onnx run by ONNX Runtime vs eager;
to_torch (fx GraphModule) vs eager; from_onnx(to_onnx(g)) through the interpreter vs eager; node
counts after `canonicalize,fold-bn`, the batch norms still following a conv or linear (should be 0),
and the folded graph vs eager; dynamic: traced with torch.export.Dim.AUTO on the batch and H, W
(MiniLM: the sequence length), the dims that stay symbolic, and the worst error of the interpreter,
ONNX Runtime and to_torch at three other sizes. A path passes when its max abs
error is within 1e-4 of the output scale (max |eager output|).

    python benchmarks/coverage.py                 # everything (about an hour on 2 cores)
    python benchmarks/coverage.py --models resnet18 minilm --no-peers
    python benchmarks/coverage.py --resume --add-dynamic   # the dynamic column for rows without it

Results go to benchmarks/results/coverage.jsonl (one line a model; --resume skips done ones),
benchmarks/results/coverage.md, and the table in benchmarks/README.md."""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from report import write_section

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
    """Every path for one model; a path that fails records its error and the others still run."""
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

    def step(label: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:
            row[f"{label}_failure"] = f"{type(e).__name__}: {str(e)[:300]}"
        gc.collect()

    def interpreter() -> None:
        outputs, row["interp_s"] = timed(lambda: go.interpret(graph, *arrays)[0])
        row["interp_err"] = relative_error(outputs, want)

    def onnx_paths() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.onnx"
            _, row["to_onnx_s"] = timed(lambda: go.to_onnx(graph, path))
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
            row["ort_err"] = relative_error(session.run(None, feeds)[0], want)
            del session
            reimported, row["from_onnx_s"] = timed(lambda: go.from_onnx(path))
            row["from_onnx_err"] = relative_error(go.interpret(reimported, *arrays)[0], want)

    def torch_module() -> None:
        fx_module = go.to_torch(graph).eval()
        with torch.no_grad():
            row["to_torch_err"] = relative_error(fx_module(*inputs), want)

    step("interp", interpreter)
    step("onnx", onnx_paths)
    step("to_torch", torch_module)
    step("fold", lambda: row.update(folded(graph, arrays, want)))
    step("dynamic", lambda: row.update(limited_dynamic(name, module)))
    if peers:
        for label, dynamo in (("dynamo", True), ("legacy", False)):
            row.update(peer_export(module, inputs, label, dynamo))
    return row


def folded(graph: Any, arrays: list[np.ndarray], want: np.ndarray) -> dict[str, Any]:
    """Node count, agreement, and batch norms still following a conv/linear after canonicalize,fold-bn."""
    import graphopt as go

    result = go.run_pipeline(graph, "canonicalize,fold-bn")
    layers = {"conv1d", "conv2d", "conv_transpose2d", "linear"}
    after_layer = sum(n.op == "batch_norm" and n.operands[0].producer is not None
                      and n.operands[0].producer.op in layers for n in result.graph)
    return {"nodes_folded": len(result.graph), "fold_s": sum(r.seconds for r in result.records),
            "bn_after_layer": after_layer, "folded_err": relative_error(go.interpret(result.graph, *arrays)[0], want)}


DYNAMIC_SIZES = {"image": [(1, 224, 224), (2, 160, 192), (1, 256, 288)], "text": [(1, 5), (2, 37), (1, 128)]}


def dynamic(name: str, module: torch.nn.Module) -> dict[str, Any]:
    """Traced with symbolic batch and H, W (or sequence length) where the model lets them be
    symbolic; the worst error of every path at three sizes it was not traced at."""
    import onnxruntime as ort

    import graphopt as go
    from graphopt import models

    auto = torch.export.Dim.AUTO
    text = models.minilm() if name == "minilm" else None
    row: dict[str, Any] = {}
    if text is not None:
        example = text.inputs(models.SENTENCES * 2, 16)
        graph, seconds = timed(lambda: go.from_torch(module, example, dynamic_shapes=tuple(
            {0: auto, 1: auto} for _ in example)))
    else:
        size = 299 if name.startswith("inception") else 224
        example = (torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)),)
        try:
            with time_limit(SPATIAL_LIMIT_S, "tracing with symbolic H and W"):
                graph, seconds = timed(lambda: go.from_torch(module, example, dynamic_shapes=({0: auto, 2: auto,
                                                                                              3: auto},)))
        except (go.GraphoptError, TimeoutError) as e:  # say why, and keep the batch symbolic
            row["dynamic_spatial_failure"] = f"{type(e).__name__}: {str(e)[:300]}"
            graph, seconds = timed(lambda: go.from_torch(module, example, dynamic_shapes=({0: auto},)))
    with tempfile.TemporaryDirectory() as tmp:  # a file: weights over 2 GB go beside it
        go.to_onnx(graph, Path(tmp) / f"{name}.onnx")
        session = ort.InferenceSession(str(Path(tmp) / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    fx_module = go.to_torch(graph).eval()
    generator = torch.Generator().manual_seed(2)
    worst, ran = 0.0, []
    for planned in DYNAMIC_SIZES["text" if text is not None else "image"]:
        if text is not None:
            inputs = text.inputs(models.varied_texts(planned[0], seed=3), planned[1])
        else:  # a dim the model kept static keeps its size
            shape = [p if isinstance(d, str) else d for d, p in zip(graph.inputs[0].shape, (planned[0], 3, *(
                s + size - 224 for s in planned[1:])))]
            inputs = (torch.randn(shape, generator=generator),)
        arrays = [x.numpy() for x in inputs]
        with torch.no_grad():
            want = module(*inputs).numpy().astype(np.float64)
            feeds = dict(zip([i.name for i in session.get_inputs()], arrays))
            outs = [go.interpret(graph, *arrays)[0], session.run(None, feeds)[0], fx_module(*inputs)]
        worst = max(worst, *(relative_error(o, want) for o in outs))
        ran.append("x".join(map(str, inputs[0].shape)))
    return {**row, "dynamic_input": str(graph.inputs[0].type), "dynamic_symbols": len(graph.symbols()),
            "dynamic_sizes": ran, "dynamic_err": worst, "dynamic_s": seconds}


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
    step = {"interp_err": "interp", "ort_err": "onnx", "from_onnx_err": "onnx", "to_torch_err": "to_torch",
            "folded_err": "fold", "dynamic_err": "dynamic"}[key]
    if f"{step}_failure" in row and value is None:
        return f"**fails: {' '.join(row[step + '_failure'].split())[:110]}**"
    if value is None:
        return "-"
    return f"{value:.1e}" if value <= TOLERANCE else f"**FAIL {value:.1e}**"


def dynamic_input(row: dict[str, Any]) -> str:
    """The traced input type, and why H and W stayed static where graphopt could not keep them symbolic."""
    text = row.get("dynamic_input", "-")
    if "dynamic_spatial_failure" in row:
        text += f" (symbolic H, W refused: {' '.join(row['dynamic_spatial_failure'].split())[:120]})"
    return text


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | nodes | from_torch s | interp err | ORT err | to_torch err | from_onnx err "
             "| nodes after canonicalize,fold-bn | BN left after conv/linear | folded err | torch.onnx dynamo s "
             "| torch.onnx legacy s | dynamic input | dynamic err (3 sizes) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | **{r['error']}** ||||||||||||")
            continue

        def peer(label: str, r: dict[str, Any] = r) -> str:
            if f"{label}_ok" not in r:
                return "-"
            return f"{r[f'{label}_s']:.1f}" if r[f"{label}_ok"] else "fails"

        lines.append(f"| {r['model']} | {r['nodes']} | {r['from_torch_s']:.1f} | {passed(r, 'interp_err')} "
                     f"| {passed(r, 'ort_err')} | {passed(r, 'to_torch_err')} | {passed(r, 'from_onnx_err')} "
                     f"| {r.get('nodes_folded', '-')} | {r.get('bn_after_layer', '-')} | {passed(r, 'folded_err')} "
                     f"| {peer('dynamo')} | {peer('legacy')} | {dynamic_input(r)} "
                     f"| {passed(r, 'dynamic_err')} |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> str:
    keys = ("interp_err", "ort_err", "to_torch_err", "from_onnx_err", "folded_err")
    ok = [r for r in rows if "error" not in r and all(r.get(k, 1.0) <= TOLERANCE for k in keys)]
    parts = [f"{len(ok)}/{len(rows)} models pass every static graphopt column"]
    tried = [r for r in rows if "dynamic_err" in r or "dynamic_failure" in r]
    if tried:
        good = [r for r in tried if r.get("dynamic_err") is not None and r["dynamic_err"] <= TOLERANCE]
        spatial = [r for r in good if r.get("dynamic_symbols", 0) >= 3]
        parts.append(f"dynamic: {len(good)}/{len(tried)} run at three new sizes ({len(spatial)} with symbolic H and W)")
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


def add_fold_columns(done: dict[str, dict[str, Any]], log: Path) -> None:
    """Fill in the fold columns of rows recorded before the clean-up passes existed."""
    import graphopt as go

    for name, row in done.items():
        if "nodes_folded" in row or "error" in row:
            continue
        print(f"fold columns for {name} ...", file=sys.stderr, flush=True)
        module, inputs = load(name)
        with torch.no_grad():
            want = module(*inputs).numpy().astype(np.float64)
        row.update(folded(go.from_torch(module, inputs), [x.numpy() for x in inputs], want))
        log.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
        gc.collect()


DYNAMIC_LIMIT_S = 600
SPATIAL_LIMIT_S = 300  # torch.export's symbolic H and W take minutes on swin (230 s for swin_t) and maxvit


@contextlib.contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    """Raise TimeoutError in the block after `seconds`; an enclosing limit resumes afterwards."""
    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, start = signal.alarm(seconds), time.monotonic()
    try:
        yield
    finally:
        signal.signal(signal.SIGALRM, previous)
        signal.alarm(max(1, outer - int(time.monotonic() - start)) if outer else 0)


def limited_dynamic(name: str, module: torch.nn.Module) -> dict[str, Any]:
    """`dynamic`, given up after DYNAMIC_LIMIT_S seconds."""
    with time_limit(DYNAMIC_LIMIT_S, "the dynamic column"):
        return dynamic(name, module)


def add_dynamic_column(done: dict[str, dict[str, Any]], log: Path) -> None:
    """Fill in the dynamic column of rows recorded before it existed."""
    for name, row in done.items():
        if "dynamic_err" in row or "dynamic_failure" in row or "error" in row:
            continue
        print(f"dynamic column for {name} ...", file=sys.stderr, flush=True)
        module, _ = load(name)
        try:
            row.update(limited_dynamic(name, module))
        except Exception as e:
            row["dynamic_failure"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(f"    {json.dumps({k: v for k, v in row.items() if k.startswith('dynamic')})}", file=sys.stderr,
              flush=True)
        log.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
        gc.collect()


def main() -> None:
    from graphopt import models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="default: every torchvision classifier and minilm")
    parser.add_argument("--no-peers", action="store_true", help="skip torch.onnx.export")
    parser.add_argument("--resume", action="store_true", help="skip models already in coverage.jsonl")
    parser.add_argument("--add-fold", action="store_true", help="add the fold columns to rows that lack them")
    parser.add_argument("--add-dynamic", action="store_true", help="add the dynamic column to rows that lack it")
    args = parser.parse_args()
    names = args.models or [*models.torchvision_classifiers(), "minilm"]
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / ("coverage-subset.jsonl" if args.models else "coverage.jsonl")  # a subset never clobbers the table
    done = {json.loads(line)["model"]: json.loads(line) for line in log.read_text().splitlines()} \
        if args.resume and log.exists() else {}
    if not args.resume:
        log.write_text("")
    if args.add_fold:
        add_fold_columns(done, log)
    if args.add_dynamic:
        add_dynamic_column(done, log)
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
    if not args.models:
        (RESULTS / "coverage.md").write_text(text + "\n")
        write_section("coverage", text)
    print(text)


if __name__ == "__main__":
    main()
