"""The `tapeir` command line."""
from __future__ import annotations

import argparse
import sys


def _load_any(path: str):
    """A saved tapeir graph, or an ONNX model (by extension) imported as a graph."""
    if path.endswith(".onnx"):
        from . import from_onnx

        return from_onnx(path, params="constants")
    from .ir import load

    return load(path)


def _dump(args) -> int:
    g = _load_any(args.file)
    if not args.passes:
        sys.stdout.write(str(g))
        return 0
    from .passes import optimize, print_after

    sys.stdout.write(f"# input\n{g}")
    optimize(g, dump=lambda name, after: print_after(name, after, file=sys.stdout))
    return 0


def _export(args) -> int:
    from . import save_onnx

    g = _load_any(args.file)
    save_onnx(g, args.output, opset=args.opset)
    print(f"wrote {args.output} ({len(g.nodes)} IR nodes, opset {args.opset or 'default'})")
    return 0


def _viz(args) -> int:
    from .backends.graphviz import node_roles, write

    g = _load_any(args.file)
    fmt = write(g, args.output)
    roles = node_roles(g)
    counts = ", ".join(f"{roles.count(r)} {r}" for r in ("forward", "backward", "optimizer") if r in roles)
    print(f"wrote {args.output} ({fmt}; {len(g.nodes)} nodes{': ' + counts if counts else ''})")
    return 0


def op_table() -> str:
    """The supported-op table (markdown), built from the tables themselves."""
    from .backends.numpy_backend import IMPL
    from .ir import OPS
    from .passes.vjp_rules import VJP
    from .passes.autodiff import DIFFERENTIATED_BY_INLINING

    try:
        from .backends.onnx_export import EXPORT
        from .frontend.onnx import IMPORT, TAPEIR_FUNCTIONS
    except ImportError:  # no onnx installed
        EXPORT = IMPORT = TAPEIR_FUNCTIONS = {}

    def mark(ok):
        return "yes" if ok else "-"

    rows = ["| IR op | category | forward (numpy) | VJP | ONNX export | ONNX import (from) |",
            "|---|---|---|---|---|---|"]
    for name in sorted(OPS):
        d = OPS[name]
        vjp = mark(name in VJP) if d.differentiable else "no gradient"
        if name in DIFFERENTIATED_BY_INLINING:
            vjp = "through its body"
        twin = d.onnx
        imp = f"yes (`{twin}`)" if twin and twin in IMPORT else "-"
        if imp == "-" and name in TAPEIR_FUNCTIONS:  # exported as a tapeir local function, read back
            imp = f"yes (`tapeir.{name}`)"
        rows.append(f"| `{name}` | {d.category.value} | {mark(name in IMPL)} | {vjp} | {mark(name in EXPORT)} | {imp} |")
    return "\n".join(rows) + "\n"


def _ops(args) -> int:
    sys.stdout.write(op_table())
    return 0


def _demo(args) -> int:
    from .demo import main as demo

    return demo(epochs=args.epochs, out_dir=args.output)


def _train_artifacts(args) -> int:
    from .artifacts import export_notes, write

    files = write(args.model, args.output, args.loss, args.optimizer, lr=args.lr, clip_grad_norm=args.clip_grad_norm,
                  opset=args.opset)
    print(f"wrote {', '.join(files)} to {args.output} (see README.txt there)")
    import onnx

    for note in export_notes(onnx.load(args.model)):  # also at the top of README.txt
        print(f"note: {note}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tapeir", description="Trace Python tensor code into a typed IR, "
                                     "print it, and run it in numpy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("dump", help="print the text form of a saved graph or of an ONNX model")
    p.add_argument("file", help="a graph saved with tp.save, or a .onnx file")
    p.add_argument("--passes", action="store_true",
                   help="print the IR after each pass of tp.optimize (canonicalize, dce, fuse)")
    p.set_defaults(func=_dump)
    p = sub.add_parser("export", help="turn a saved graph into an ONNX model")
    p.add_argument("file", help="a graph saved with tp.save")
    p.add_argument("output", help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: tapeir's default)")
    p.set_defaults(func=_export)
    p = sub.add_parser("viz", help="draw a saved graph or an ONNX model with Graphviz (.svg/.png/.pdf or .dot)",
                       description="Draw a graph: forward, backward and optimizer nodes in their own colours, "
                       "fused nodes as clusters, types on edges, source lines in labels. .dot needs nothing; "
                       ".svg/.png/.pdf need Graphviz's `dot`. To browse an ONNX model op by op, open it in Netron.")
    p.add_argument("file", help="a graph saved with tp.save, or a .onnx file")
    p.add_argument("-o", "--output", required=True, help="the picture to write: .svg, .png, .pdf or .dot")
    p.set_defaults(func=_viz)
    p = sub.add_parser("ops", help="print the supported-op table (forward / VJP / ONNX export / import)")
    p.set_defaults(func=_ops)
    p = sub.add_parser("demo", help="train an MLP on digits in numpy and onnxruntime, export it, write IR dumps")
    p.add_argument("-o", "--output", default=None, help="output directory (default: a fresh ./tapeir-demo[-N])")
    p.add_argument("--epochs", type=int, default=15, help="training epochs per backend (default 15)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("train-artifacts", help="turn a forward ONNX model into a standard-ONNX training step, "
                       "eval model, checkpoint and README")
    p.add_argument("model", help="the forward model (.onnx), e.g. from torch.onnx.export")
    p.add_argument("--loss", required=True, help="cross_entropy (logits [N, C], integer labels) or mse")
    p.add_argument("--optimizer", default="adam", help="adam, adamw or sgd (PyTorch's defaults; default adam)")
    p.add_argument("--lr", type=float, default=None, help="the learning rate the README's loop uses")
    p.add_argument("--clip-grad-norm", type=float, default=None, help="clip gradients to this global norm")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: tapeir's default)")
    p.add_argument("-o", "--output", required=True, help="the directory to create (must not exist)")
    p.set_defaults(func=_train_artifacts)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .ir import TapeirError

    try:
        return args.func(args)
    except TapeirError as e:
        print(f"tapeir: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"tapeir: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
