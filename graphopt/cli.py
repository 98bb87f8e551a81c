"""The `graphopt` command: show a model, run a pipeline over it, list passes and ops, run the demo.
Errors on bad input print one line naming the problem, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph

MODEL_FORMATS = "an .onnx file, a text-IR file (.gir), or a torch factory 'package.module:factory'"
OUTPUT_FORMATS = ".onnx or .gir"


def parse_input_shapes(text: str) -> list[tuple[list[int], str]]:
    """'1x3x224x224' or '1x128:int64,1x128:int64' -> [(shape, dtype), ...]."""
    shapes = []
    for item in text.split(","):
        dims, _, dtype = item.strip().partition(":")
        try:
            shapes.append(([int(d) for d in dims.split("x")], dtype or "float32"))
        except ValueError:
            raise GraphoptError(f"bad --input-shape {item!r}; write sizes joined by x, e.g. 1x3x224x224") from None
    return shapes


def load_torch_factory(spec: str, input_shape: str | None, dynamic_batch: bool) -> Graph:
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise GraphoptError(f"cannot import factory {spec!r}: {type(e).__name__}: {e}") from None
    if input_shape is None:
        raise GraphoptError(f"{spec} is a torch model: give its input with --input-shape, e.g. 1x3x224x224")
    import torch

    from graphopt.frontends.torch import from_torch

    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise GraphoptError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(shape, generator=generator) if dtype.startswith("float") else
              torch.ones(shape, dtype=getattr(torch, dtype)) for shape, dtype in parse_input_shapes(input_shape)]
    return from_torch(model, inputs, dynamic_batch=dynamic_batch, name=attr)


def load_model(spec: str, input_shape: str | None = None, dynamic_batch: bool = False) -> Graph:
    from graphopt.ir.serialize import load

    path = Path(spec)
    if path.suffix in (".gir", ".onnx"):
        if not path.exists():
            raise GraphoptError(f"model file {spec} does not exist")
        if path.suffix == ".gir":
            return load(path)
        from graphopt.frontends.onnx import from_onnx

        return from_onnx(path)
    if ":" in spec and not path.exists():
        return load_torch_factory(spec, input_shape, dynamic_batch)
    raise GraphoptError(f"cannot read model {spec!r}: graphopt reads {MODEL_FORMATS}")


def write_model(graph: Graph, out: Path) -> None:
    if out.suffix == ".onnx":
        from graphopt.backends.onnx import to_onnx

        to_onnx(graph, out)
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


def cmd_opt(args: argparse.Namespace) -> None:
    from graphopt.analysis import graph_cost
    from graphopt.fileio import refuse_overwrite
    from graphopt.ir.serialize import weights_path
    from graphopt.pipeline import DumpToFolder, PrintAfter, Timing, run_pipeline

    out = Path(args.output)
    if out.suffix not in (".gir", ".onnx"):
        raise GraphoptError(f"cannot write {out}: graphopt writes {OUTPUT_FORMATS}")
    refuse_overwrite(out, args.model)
    refuse_overwrite(weights_path(out), weights_path(args.model))
    refuse_overwrite(Path(str(out) + ".data"), Path(str(args.model) + ".data"))
    graph = load_model(args.model, args.input_shape, args.dynamic_batch)
    options = {}
    if args.calibration:
        from graphopt.quant import load_calibration

        options["calibration"] = load_calibration(args.calibration, graph)
        options["calibration"].check(graph)  # bad data fails here, before any pass runs
    weight_bytes = graph_cost(graph).param_bytes  # for the quantization report
    instruments = [] if args.quiet else [Timing(sys.stderr)]
    if args.print_after:
        instruments.append(PrintAfter(*args.print_after))
    if args.dump:
        instruments.append(DumpToFolder(args.dump))
    result = run_pipeline(graph, args.pipeline, verify=not args.no_verify, instruments=instruments, in_place=True,
                          **options)
    write_model(result.graph, out)
    print(result.report())
    print(f"wrote {out}")
    summary = next((r.details for r in result.records if r.spec.startswith("quantize")), None)
    if summary is not None:
        from graphopt.quant.report import write_report

        fusion = None
        if out.suffix == ".onnx":
            from graphopt.backends.ort_fusion import check_fusion

            fusion = check_fusion(out, summary.float)
        report = write_report(Path(args.report or out.with_suffix(".report.md")), model=args.model,
                              weight_bytes=weight_bytes, after=result.graph, summary=summary, fusion=fusion,
                              samples=len(options["calibration"]) if "calibration" in options else 0)
        print(f"wrote {report}")


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

    run_demo(Path(args.out), args.pipeline)


def add_torch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", help="for torch factories: e.g. 1x3x224x224, or 1x128:int64,1x128:int64")
    parser.add_argument("--dynamic-batch", action="store_true", help="for torch factories: a symbolic batch dim N")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphopt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print a model's IR and summary (ops, parameters, MACs)")
    show.add_argument("model", help=MODEL_FORMATS)
    add_torch_options(show)
    show.add_argument("--summary-only", action="store_true", help="print only the summary")
    show.set_defaults(run=cmd_show)
    opt = sub.add_parser("opt", help="run a pipeline over a model and write the result")
    opt.add_argument("model", help=MODEL_FORMATS)
    add_torch_options(opt)
    opt.add_argument("-p", "--pipeline", required=True, help="e.g. 'dce' or 'dce{keep-parameters=true}'")
    opt.add_argument("-o", "--output", required=True, help=f"output file ({OUTPUT_FORMATS}); written atomically")
    opt.add_argument("--no-verify", action="store_true", help="skip verification after each pass")
    opt.add_argument("--calibration", metavar="DATA", help="calibration inputs for quantize: an .npz (arrays named "
                     "after the model inputs, samples along axis 0) or a folder of .npy/.npz files")
    opt.add_argument("--report", metavar="FILE.md", help="quantization report (default: next to the output)")
    opt.add_argument("--print-after", nargs="*", metavar="PASS", help="print the IR after these passes")
    opt.add_argument("--dump", metavar="DIR", help="save the IR before and after every pass in DIR")
    opt.add_argument("-q", "--quiet", action="store_true", help="no per-pass progress lines")
    opt.set_defaults(run=cmd_opt)
    sub.add_parser("passes", help="list the passes and their options").set_defaults(run=cmd_passes)
    sub.add_parser("ops", help="list the registered ops").set_defaults(run=cmd_ops)
    demo = sub.add_parser("demo", help="trace MiniLM, run a pipeline, write ONNX, check it in ONNX Runtime")
    demo.add_argument("--out", default="out/demo", help="folder for the graphs and the report")
    demo.add_argument("-p", "--pipeline", default="canonicalize,fold-bn,fuse-activation")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except GraphoptError as e:
        print(f"graphopt: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
