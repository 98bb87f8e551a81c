"""The `graphopt` command: show a model, run a pipeline over it, list passes and ops, run the demo.
Errors on bad input print one line naming the problem, never a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from graphopt.errors import GraphoptError
from graphopt.ir.graph import Graph

MODEL_FORMATS = "a text-IR file (.gir)"


def load_model(spec: str) -> Graph:
    from graphopt.ir.serialize import load

    path = Path(spec)
    if path.suffix == ".gir":
        if not path.exists():
            raise GraphoptError(f"model file {spec} does not exist")
        return load(path)
    raise GraphoptError(f"cannot read model {spec!r}: graphopt reads {MODEL_FORMATS}")


def cmd_show(args: argparse.Namespace) -> None:
    from graphopt.analysis import graph_cost
    from graphopt.ir.verifier import verify

    graph = load_model(args.model)
    verify(graph)
    if not args.summary_only:
        print(graph)
    print(graph_cost(graph).summary())


def cmd_opt(args: argparse.Namespace) -> None:
    from graphopt.fileio import refuse_overwrite
    from graphopt.ir.serialize import save, weights_path
    from graphopt.pipeline import DumpToFolder, PrintAfter, Timing, run_pipeline

    out = Path(args.output)
    if out.suffix != ".gir":
        raise GraphoptError(f"cannot write {out}: graphopt writes {MODEL_FORMATS}")
    refuse_overwrite(out, args.model)
    refuse_overwrite(weights_path(out), weights_path(args.model))
    graph = load_model(args.model)
    instruments = [] if args.quiet else [Timing(sys.stderr)]
    if args.print_after:
        instruments.append(PrintAfter(*args.print_after))
    if args.dump:
        instruments.append(DumpToFolder(args.dump))
    result = run_pipeline(graph, args.pipeline, verify=not args.no_verify, instruments=instruments, in_place=True)
    save(result.graph, out)
    print(result.report())
    print(f"wrote {out}")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphopt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="print a model's IR and summary (ops, parameters, MACs)")
    show.add_argument("model", help=MODEL_FORMATS)
    show.add_argument("--summary-only", action="store_true", help="print only the summary")
    show.set_defaults(run=cmd_show)
    opt = sub.add_parser("opt", help="run a pipeline over a model and write the result")
    opt.add_argument("model", help=MODEL_FORMATS)
    opt.add_argument("-p", "--pipeline", required=True, help="e.g. 'dce' or 'dce{keep-parameters=true}'")
    opt.add_argument("-o", "--output", required=True, help="output file (.gir); written atomically")
    opt.add_argument("--no-verify", action="store_true", help="skip verification after each pass")
    opt.add_argument("--print-after", nargs="*", metavar="PASS", help="print the IR after these passes")
    opt.add_argument("--dump", metavar="DIR", help="save the IR before and after every pass in DIR")
    opt.add_argument("-q", "--quiet", action="store_true", help="no per-pass progress lines")
    opt.set_defaults(run=cmd_opt)
    sub.add_parser("passes", help="list the passes and their options").set_defaults(run=cmd_passes)
    sub.add_parser("ops", help="list the registered ops").set_defaults(run=cmd_ops)
    demo = sub.add_parser("demo", help="build, optimize and check a small CNN end to end")
    demo.add_argument("--out", default="out/demo", help="folder for the graphs and the report")
    demo.add_argument("-p", "--pipeline", default="dce")
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
