"""The ``tl`` command. Each subcommand imports only what it needs, so ``tl inspect`` never loads torch."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from .errors import TensorLogicError


def _debug() -> bool:
    return os.environ.get("TL_DEBUG", "") not in ("", "0")


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def cmd_inspect(args: argparse.Namespace) -> int:
    from .formats import open_model_file

    file = open_model_file(args.file)
    try:
        md = file.metadata()
        infos = file.tensor_infos() if args.tensors else []
        if args.json:
            doc = md.to_dict()
            if args.tensors:
                doc["tensors"] = [
                    {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "nbytes": t.nbytes, "offset": t.offset}
                    for t in infos
                ]
            json.dump(doc, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
            return 0
        _print_inspect(args.file, md, infos)
    finally:
        file.close()
    return 0


def _print_inspect(path: str, md, infos) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title=str(path), show_header=False, title_justify="left")
    summary.add_column("field", style="bold cyan")
    summary.add_column("value")
    rows = [
        ("format", md.format),
        ("quantization", md.quantization),
        ("model type", md.model_type),
        ("name", md.name),
        ("architecture", md.architecture),
        ("spec version", md.spec_version),
        ("minimum OS", md.min_os),
        ("opset", md.opset),
        ("author", md.author),
        ("license", md.license),
        ("version", md.version),
        ("description", md.description),
        ("parameters", f"{md.parameter_count:,}"),
        ("tensors", f"{md.tensor_count:,}"),
        ("file size", _human_bytes(md.file_size)),
    ]
    for key, value in rows:
        if value not in (None, ""):
            summary.add_row(key, str(value))
    for label, feats in (("input", md.inputs), ("output", md.outputs), ("state", md.states)):
        for feat in feats:
            summary.add_row(label, str(feat))
    console.print(summary)

    extra = {k: v for k, v in md.extra.items() if k != "op_histogram"}
    if extra:
        table = Table(title="metadata", title_justify="left")
        table.add_column("key", style="cyan")
        table.add_column("value", overflow="fold")
        for key, value in extra.items():
            text = json.dumps(value, default=str) if not isinstance(value, str) else value
            if len(text) > 200:
                text = text[:197] + "..."
            table.add_row(str(key), text)
        console.print(table)

    hist = md.extra.get("op_histogram")
    if hist:
        ops = Table(title="ops", title_justify="left")
        ops.add_column("op", style="cyan")
        ops.add_column("count", justify="right")
        for op, n in hist.items():
            ops.add_row(op, str(n))
        console.print(ops)

    if infos:
        tensors = Table(title=f"tensors ({len(infos)})", title_justify="left")
        tensors.add_column("name", style="cyan", overflow="fold")
        tensors.add_column("shape")
        tensors.add_column("dtype")
        tensors.add_column("bytes", justify="right")
        for t in infos:
            tensors.add_row(t.name, "[" + ", ".join(str(d) for d in t.shape) + "]", t.dtype, _human_bytes(t.nbytes))
        console.print(tensors)


def cmd_run(args: argparse.Namespace) -> int:
    from .lang.runner import run_file

    return run_file(args.file, device=args.device)


def cmd_repl(args: argparse.Namespace) -> int:
    from .lang.repl import repl

    return repl(device=getattr(args, "device", None))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl",
        description="TensorLogic: run Core ML models anywhere, load SafeTensors and GGUF, run .tl scripts.",
    )
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("inspect", help="show a model file's format, metadata and tensors")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tensors", action="store_true", help="list every tensor")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("run", help="run a TensorLogic script")
    p.add_argument("file")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("repl", help="interactive TensorLogic prompt")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None)
    p.set_defaults(func=cmd_repl)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args.device = None
        args.func = cmd_repl
    try:
        return int(args.func(args) or 0)
    except TensorLogicError as e:
        if _debug():
            raise
        print(f"tl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
