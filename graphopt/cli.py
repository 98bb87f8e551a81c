"""The `graphopt` command: show a model, run a pipeline over it, list passes and ops, run the demo.
Errors on bad input print one line naming the problem, never a traceback."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphopt.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    FileError,
    GraphoptError,
    InternalError,
    UsageError,
)
from graphopt.ir.graph import Graph

MODEL_FORMATS = "an .onnx file, a text-IR file (.gir), or a torch factory 'package.module:factory'"
OUTPUT_FORMATS = ".onnx or .gir"


INPUT_DTYPES = ("float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_EXAMPLE_ELEMENTS = 1 << 28  # an example input for tracing: 1 GiB of float32 is already far more than needed


def parse_input_shapes(text: str) -> list[tuple[list[int], str]]:
    """'1x3x224x224' or '1x128:int64,1x128:int64' -> [(shape, dtype), ...]."""
    shapes = []
    for item in text.split(","):
        dims, _, dtype = item.strip().partition(":")
        try:
            shape = [int(d) for d in dims.split("x")]
        except ValueError:
            raise UsageError(f"bad --input-shape {item!r}; write sizes joined by x, e.g. 1x3x224x224") from None
        if any(d < 1 for d in shape):
            raise UsageError(f"bad --input-shape {item!r}: every size must be 1 or more")
        if math.prod(shape) > MAX_EXAMPLE_ELEMENTS:
            raise UsageError(f"--input-shape {item!r} has {math.prod(shape):,} elements; tracing needs only a "
                             f"representative example (at most {MAX_EXAMPLE_ELEMENTS:,} elements)")
        if dtype and dtype not in INPUT_DTYPES:
            raise UsageError(f"bad --input-shape {item!r}: dtype {dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
        shapes.append((shape, dtype or "float32"))
    return shapes


def parse_onnx_shapes(text: str) -> dict[str, list[int | str | None]]:
    """'x:1x3x48xW' or 'ids:1xL,mask:1xL' -> {input: dims}: an int pins a dim, a name makes it that
    symbol, ? keeps the file's."""
    shapes: dict[str, list[int | str | None]] = {}
    for item in text.split(","):
        name, colon, dims = item.strip().rpartition(":")
        if not colon or not name or not dims:
            raise UsageError(f"bad --input-shape {item!r} for an ONNX file: write INPUT:DIMS, e.g. x:1x3x48xW "
                             "(an int pins a dim, a name keeps it symbolic under that name, ? keeps the file's)")
        parsed: list[int | str | None] = []
        for d in dims.split("x"):
            if d.isdigit() and int(d) >= 1:
                parsed.append(int(d))
            elif d == "?":
                parsed.append(None)
            elif d.isidentifier():
                parsed.append(d)
            else:
                raise UsageError(f"bad --input-shape {item!r}: {d!r} is neither a size (1 or more), a name nor ?")
        shapes[name] = parsed
    return shapes


def load_torch_factory(spec: str, input_shape: str | None, dynamic_batch: bool) -> Graph:
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UsageError(f"cannot import factory {spec!r}: {type(e).__name__}: {e}") from None
    if not callable(factory):
        raise UsageError(f"{spec} is a {type(factory).__name__}, not a factory: name a function or class that "
                         "returns a torch.nn.Module")
    if input_shape is None:
        raise UsageError(f"{spec} is a torch model: give its input with --input-shape, e.g. 1x3x224x224")
    shapes = parse_input_shapes(input_shape)
    import torch

    from graphopt.frontends.torch import from_torch

    try:
        model = factory()
    except Exception as e:
        raise GraphoptError(f"{spec}() raised {type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise GraphoptError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(shape, generator=generator, dtype=getattr(torch, dtype)) if dtype.startswith(("float", "bfloat"))
              else torch.ones(shape, dtype=getattr(torch, dtype)) for shape, dtype in shapes]
    return from_torch(model, inputs, dynamic_batch=dynamic_batch, name=attr)


def load_model(spec: str, input_shape: str | None = None, dynamic_batch: bool = False) -> Graph:
    from graphopt.ir.serialize import load

    path = Path(spec)
    if path.suffix in (".gir", ".onnx"):
        if not path.exists():
            raise FileError(f"model file {spec} does not exist")
        if path.is_dir():
            raise FileError(f"model {spec} is a folder, not a file")
        if path.suffix == ".gir":
            return load(path)
        from graphopt.frontends.onnx import from_onnx

        return from_onnx(path, input_shapes=parse_onnx_shapes(input_shape) if input_shape else None)
    if ":" in spec and not path.exists():
        return load_torch_factory(spec, input_shape, dynamic_batch)
    raise UsageError(f"cannot read model {spec!r}: graphopt reads {MODEL_FORMATS}")


def write_model(graph: Graph, out: Path, packed: bool = False) -> None:
    if out.suffix == ".onnx":
        from graphopt.backends.onnx import to_onnx

        to_onnx(graph, out, packed=packed)
    else:
        from graphopt.ir.serialize import save

        save(graph, out)


def cmd_show(args: argparse.Namespace) -> None:
    from graphopt.analysis import graph_cost
    from graphopt.ir.verifier import verify

    graph = load_model(args.model, args.input_shape, args.dynamic_batch)
    verify(graph)
    if not args.summary_only:
        print(graph)
    print(graph_cost(graph).summary())


REPORTING = {"prune", "remove-blocks", "distill", "quantize"}  # passes whose runs get a report


def cmd_opt(args: argparse.Namespace) -> None:
    from graphopt.pipeline.spec import parse_pipeline
    from graphopt.recipe import load_recipe

    recipe = None
    if args.recipe:
        if args.pipeline:
            raise UsageError("give the pipeline either with -p or in --recipe, not both")
        recipe = load_recipe(args.recipe)
        passes = recipe.passes
        args.calibration = args.calibration or (str(recipe.calibration) if recipe.calibration else None)
        args.data = args.data or (str(recipe.train) if recipe.train else None)
        args.input_shape = args.input_shape or recipe.input_shape
        args.dynamic_batch = args.dynamic_batch or recipe.dynamic_batch
    elif args.pipeline:
        passes = parse_pipeline(args.pipeline)  # bad options fail before any file is read
    else:
        raise UsageError("give a pipeline: -p 'pass,pass{option=value}' or --recipe FILE.toml")
    run_opt(args, passes, recipe, every_step=recipe is not None)


def _count_or_auto(text: str) -> int | None:
    if text == "auto":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count of blocks nor 'auto'")
    return int(text)


def cmd_compress(args: argparse.Namespace) -> None:
    from graphopt.pipeline.spec import parse_pipeline
    from graphopt.recipe import default_recipe

    args.pipeline = default_recipe(args.macs, args.epochs, args.remove_blocks, bool(args.calibration), bool(args.data))
    args.print_after, args.dump, args.no_verify, args.recipe = None, None, False, None
    run_opt(args, parse_pipeline(args.pipeline), None, every_step=True)


def run_opt(args: argparse.Namespace, passes: list[Any], recipe: Any, every_step: bool) -> None:
    """Load the model and data, run `passes`, write the result and the report (every step's cost,
    latency and output cosine when `every_step`, else the model before and after)."""
    from graphopt.analysis import graph_cost
    from graphopt.pipeline import DumpToFolder, PrintAfter, StepCosts, Timing, run_pipeline
    from graphopt.report import PLOTS, plot_path, recipe_section, steps_section, write_report

    out = Path(args.output)
    if out.suffix not in (".gir", ".onnx"):
        raise UsageError(f"cannot write {out}: graphopt writes {OUTPUT_FORMATS}")
    unknown = sorted(set(args.print_after or ()) - {p.name for p in passes})
    if unknown:
        raise UsageError(f"--print-after {', '.join(unknown)}: no such pass in the pipeline "
                         f"({', '.join(p.name for p in passes) or 'empty'})")
    report = Path(args.report) if args.report else out.with_suffix(".report.md")
    data_files = [args.calibration, args.data, args.held_out]
    check_paths(reads=model_reads(args.model) + [r for f in data_files for r in calibration_reads(f)],
                writes=[*model_writes(out), report, report.with_suffix(".png"), *(plot_path(report, k) for k in PLOTS)],
                folders=[Path(args.dump)] if args.dump else [])
    graph = load_model(args.model, args.input_shape, args.dynamic_batch)
    options: dict[str, Any] = {}
    from graphopt.quant import load_calibration

    if args.calibration:
        options["calibration"] = load_calibration(args.calibration, graph)
        options["calibration"].check(graph)  # bad data fails here, before any pass runs
    if args.data:
        options["data"] = load_calibration(args.data, graph, labels=True).samples
    weight_bytes = graph_cost(graph).param_bytes  # for the quantization report
    instruments: list[Any] = [] if args.quiet else [Timing(sys.stderr)]
    if args.print_after:
        instruments.append(PrintAfter(*args.print_after))
    if args.dump:
        instruments.append(DumpToFolder(args.dump))
    costs = None
    if every_step or any(p.name in REPORTING for p in passes):
        held, described = _held_out(args.held_out, graph)
        costs = StepCosts(held, every_step=every_step)
        instruments.append(costs)
    result = run_pipeline(graph, passes, verify=not args.no_verify, instruments=instruments, in_place=True, **options)
    write_model(result.graph, out, packed=args.packed)
    print(result.report())
    print(f"wrote {out}")
    sections = [] if recipe is None else [recipe_section(recipe, _versions())]
    if costs is not None:
        sections.append(steps_section(report, costs.rows, described))
        first, last = costs.rows[0], costs.rows[-1]
        if first.latency_ms and last.latency_ms:
            print(f"latency (ONNX Runtime, 1 thread): {first.latency_ms:.2f} -> {last.latency_ms:.2f} ms "
                  f"({first.latency_ms / last.latency_ms:.2f}x)")
    for record in result.records:
        if hasattr(record.details, "section"):  # passes that report (prune, remove-blocks, distill)
            print(record.details.line())
            sections.append(record.details.section(report))
        if record.spec.startswith("quantize") and record.details is not None:
            from graphopt.quant.report import quantize_section

            fusion = None
            if out.suffix == ".onnx":
                from graphopt.backends.ort_fusion import check_fusion

                fusion = check_fusion(out, record.details.float)
            sections.append(quantize_section(report, weight_bytes=weight_bytes, after=result.graph,
                                             summary=record.details, fusion=fusion,
                                             samples=len(options["calibration"]) if "calibration" in options else 0))
    if sections:
        print(f"wrote {write_report(report, args.model, sections)}")


def _held_out(spec: str | None, graph: Graph) -> tuple[list[tuple[Any, ...]], str]:
    """The samples the report's cosine is measured on, and how to describe them."""
    if spec:
        from graphopt.quant import load_calibration

        samples = load_calibration(spec, graph).samples[:16]
        return samples, f"{len(samples)} held-out sample(s) from {spec}"
    from graphopt.analysis.latency import random_inputs

    return [tuple(random_inputs(graph))], ("one random input (give --held-out DATA, samples kept out of calibration "
                                           "and training, for a meaningful proxy)")


def _versions() -> dict[str, str]:
    import importlib.metadata as metadata
    import platform

    from graphopt import __version__

    out = {"graphopt": __version__, "python": platform.python_version()}
    for package in ("torch", "onnx", "onnxruntime", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def model_reads(spec: str) -> list[Path]:
    """The files reading model `spec` opens: the model and its side weights or external data."""
    path = Path(spec)
    if path.suffix == ".gir":
        from graphopt.ir.serialize import weights_path

        return [path, weights_path(path)]
    if path.suffix == ".onnx" and path.is_file():
        from graphopt.frontends.onnx import external_data_files

        return [path, *external_data_files(path)]
    return [path] if path.exists() else []


def model_writes(out: Path) -> list[Path]:
    """The files writing `out` may create or replace (check_paths matches a .gir's weights by name)."""
    return [out, Path(str(out) + ".data")] if out.suffix == ".onnx" else [out]


def calibration_reads(spec: str | None) -> list[Path]:
    if not spec:
        return []
    path = Path(spec)
    return [path, *(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))] if path.is_dir() else [path]


def check_paths(*, reads: list[Path], writes: list[Path], folders: list[Path]) -> None:
    """Before any work: no output may replace an input, a folder, or another output; no input may
    sit in a folder that gets written (compared after resolving links)."""
    from graphopt.fileio import check_writable
    from graphopt.ir.serialize import is_weights_file_of

    resolved_reads = {r.resolve(): r for r in reads}
    for w in writes + folders:
        target = w.resolve()
        if target in resolved_reads:
            raise FileError(f"{w} would overwrite the input {resolved_reads[target]}; choose another output path")
    for w in writes:
        check_writable(w)
        for r in resolved_reads:
            if w.suffix == ".gir" and is_weights_file_of(w, r):
                raise FileError(f"writing {w} would replace the input {resolved_reads[r]} (its weights file); "
                                "choose another output path")
    if len({w.resolve() for w in writes}) < len(writes):
        raise FileError(f"two outputs would be the same file: {', '.join(map(str, writes))}")
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise FileError(f"--dump {folder} is a file; give a folder (it is created if missing)")
        inside = [r for r in resolved_reads if folder.resolve() in r.parents]
        if inside:
            raise FileError(f"--dump {folder} holds the input {resolved_reads[inside[0]]}; dump into another folder")


def cmd_passes(args: argparse.Namespace) -> None:
    from graphopt.passes import available

    for info in available():
        print(info)


def cmd_ops(args: argparse.Namespace) -> None:
    from graphopt.ops import registered_ops

    for name, opdef in registered_ops().items():
        attrs = ", ".join(f"{k}: {a.kind.value}" for k, a in opdef.attrs.items())
        lo, hi = opdef.arity
        arity = str(lo) if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
        print(f"{name:<30} operands {arity:<6} channel {opdef.channel.value:<11} {attrs}")


def cmd_demo(args: argparse.Namespace) -> None:
    from graphopt.demo import run_demo

    run_demo(Path(args.out), args.epochs, args.texts)


def add_torch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", help="for torch factories: e.g. 1x3x224x224, or 1x128:int64,1x128:int64; "
                        "for ONNX files, dims to pin or name: x:1x3x48xW (? keeps the file's)")
    parser.add_argument("--dynamic-batch", action="store_true", help="for torch factories: a symbolic batch dim N")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help=f"output file ({OUTPUT_FORMATS}); written atomically")
    parser.add_argument("--calibration", metavar="DATA", help="calibration inputs for quantize and the data-driven "
                        "scores: an .npz (arrays named after the model inputs, samples along axis 0) or a folder of "
                        ".npy/.npz files")
    parser.add_argument("--data", metavar="DATA", help="training data for distill, laid out as --calibration; an "
                        "array named 'labels' (one per sample, optional) adds cross-entropy")
    parser.add_argument("--held-out", metavar="DATA", help="samples kept out of calibration and training, on which "
                        "the report measures each step's output cosine to the input model")
    parser.add_argument("--report", metavar="FILE.md", help="the report (default: next to the output)")
    parser.add_argument("--packed", action="store_true", help="store ternary, binary and 4-bit weights in ONNX "
                        "INT2 / INT4 (opset 25): a smaller file, the same int8 kernels")
    parser.add_argument("-q", "--quiet", action="store_true", help="no per-pass progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphopt", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also GRAPHOPT_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print a model's IR and summary (ops, parameters, MACs)")
    show.add_argument("model", help=MODEL_FORMATS)
    add_torch_options(show)
    show.add_argument("--summary-only", action="store_true", help="print only the summary")
    show.set_defaults(run=cmd_show)
    opt = sub.add_parser("opt", help="run a pipeline over a model and write the result")
    opt.add_argument("model", help=MODEL_FORMATS)
    add_torch_options(opt)
    opt.add_argument("-p", "--pipeline", help="e.g. 'dce' or 'dce{keep-parameters=true}'")
    opt.add_argument("--recipe", metavar="FILE.toml", help="the pipeline, data and per-step options from a recipe "
                     "file (TOML, or YAML with PyYAML); see graphopt/recipe.py")
    add_run_options(opt)
    opt.add_argument("--no-verify", action="store_true", help="skip verification after each pass")
    opt.add_argument("--print-after", nargs="*", metavar="PASS", help="print the IR after these passes")
    opt.add_argument("--dump", metavar="DIR", help="save the IR before and after every pass in DIR")
    opt.set_defaults(run=cmd_opt)
    compress = sub.add_parser("compress", help="the default recipe: canonicalize, fold-bn, remove-blocks (where "
                              "they pay), prune to --macs, distill (with --data), int8 (with --calibration)")
    compress.add_argument("model", help=MODEL_FORMATS)
    add_torch_options(compress)
    compress.add_argument("--macs", type=float, default=0.5, help="fraction of the model's MACs to keep")
    compress.add_argument("--epochs", type=int, default=3, help="distillation epochs (with --data)")
    compress.add_argument("--remove-blocks", type=_count_or_auto, default=None, metavar="N|auto",
                          help="residual blocks to remove first (default auto: as many as measure better than "
                          "pruning channels to the same MACs; 0: none)")
    add_run_options(compress)
    compress.set_defaults(run=cmd_compress)
    sub.add_parser("passes", help="list the passes and their options").set_defaults(run=cmd_passes)
    sub.add_parser("ops", help="list the registered ops").set_defaults(run=cmd_ops)
    demo = sub.add_parser("demo", help="compress the real all-MiniLM-L6-v2 by a recipe (remove blocks, prune, "
                          "distill on unlabeled text, int8) and report what each step cost and bought")
    demo.add_argument("--out", default="out/demo", help="folder for the data, the recipe, the model and the report")
    demo.add_argument("--epochs", type=int, default=8, help="distillation epochs")
    demo.add_argument("--texts", type=int, default=1024, help="unlabeled training texts")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure is one line on stderr and an exit code: usage 2, bad input 3,
    unsupported model 4, internal error 70 (its traceback saved to a file), interrupted 130."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("GRAPHOPT_DEBUG") == "1"
    try:
        args.run(args)
    except KeyboardInterrupt:
        print("graphopt: interrupted; no output was replaced", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            traceback.print_exc()
        if isinstance(e, GraphoptError) and not isinstance(e, InternalError):
            print(f"graphopt: error: {e}", file=sys.stderr)
            return e.exit_code
        trace = save_trace()
        what = str(e) if isinstance(e, InternalError) else f"{type(e).__name__}: {e}"
        print(f"graphopt: internal error (a bug in graphopt, not in your input): {what.splitlines()[0] if what else ''}; "
              f"the traceback is in {trace}; please report it", file=sys.stderr)
        return EXIT_INTERNAL
    return 0


def save_trace() -> str:
    """Write the current exception's traceback to a new file in the temp folder; its path."""
    fd, path = tempfile.mkstemp(prefix=f"graphopt-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"graphopt {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    sys.exit(main())
