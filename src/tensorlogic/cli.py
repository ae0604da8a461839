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
            _dump_json(doc, sys.stdout)
            return 0
        _print_inspect(args.file, md, infos)
    finally:
        file.close()
    return 0


def _dump_json(doc: dict, out) -> None:
    """Indented JSON for the top two levels, compact below: ``indent=`` would bypass the C encoder,
    which costs seconds on a GGUF tokenizer vocabulary of 150k strings."""

    def render(value, depth: int) -> str:
        if depth < 2 and isinstance(value, dict) and value:
            pad = "  " * (depth + 1)
            items = [f"{pad}{json.dumps(str(k))}: {render(v, depth + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
        return json.dumps(value, default=str, ensure_ascii=False)

    out.write(render(doc, 0) + "\n")


def _short(value) -> str:
    """A one-cell rendering of a metadata value: long sequences cut before they are encoded."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple)) and len(value) > 16:
        head = json.dumps(list(value[:16]), default=str, ensure_ascii=False)
        text = f"{head[:-1]}, ... ] ({len(value):,} items)"
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


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
            table.add_row(str(key), _short(value))
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

    return run_file(args.file, device=args.device, bench=args.bench)


def cmd_test(args: argparse.Namespace) -> int:
    from .lang.runner import run_test_blocks

    return run_test_blocks(args.file, device=args.device)


def cmd_repl(args: argparse.Namespace) -> int:
    from .lang.repl import repl

    return repl(device=getattr(args, "device", None))


def _read_input(spec: str, feature) -> tuple[str, object]:
    """``NAME=FILE`` → (name, value): .npy arrays, images (.png/.jpg/...), JSON numbers or lists."""
    import numpy as np

    from .errors import InputError

    name, sep, file = spec.partition("=")
    if not sep or not name or not file:
        raise InputError(f"--input {spec!r}: expected NAME=FILE (a .npy, image or .json file)")
    path = os.path.expanduser(file)
    if not os.path.isfile(path):
        raise InputError(f"--input {name}: no file {file!r}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            return name, np.load(path, allow_pickle=False)
        if suffix == ".json":
            with open(path, encoding="utf-8") as fh:
                return name, np.asarray(json.load(fh))
        if suffix in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"):
            from PIL import Image

            from .runtime.features import pil_mode

            return name, Image.open(path).convert(pil_mode(feature))
    except (OSError, ValueError) as e:
        raise InputError(f"--input {name}: cannot read {file!r}: {e}") from None
    raise InputError(f"--input {name}: {file!r} is not a .npy, .json or image file")


def _summarize(value, full: bool) -> dict:
    import numpy as np

    if isinstance(value, np.ndarray):
        doc = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if full:
            doc["values"] = value.tolist()
        else:
            doc["values"] = np.array2string(value, threshold=24, edgeitems=3, precision=6)
        return doc
    if isinstance(value, dict):
        ranked = sorted(value.items(), key=lambda kv: -kv[1])
        return {"probabilities": dict(ranked if full else ranked[:5])}
    if hasattr(value, "mode") and hasattr(value, "size"):
        return {"image": f"{value.mode} {value.size[0]}x{value.size[1]}"}
    return {"value": value}


def cmd_predict(args: argparse.Namespace) -> int:
    from .errors import InputError
    from .model import load_model

    batch = args.input_dir is not None or args.input_parquet is not None
    if batch or args.output_parquet is not None:
        if args.input or args.json:
            raise InputError("--input and --json are for one prediction; a batch (--input-dir or --input-parquet) "
                             "writes --output-parquet")
        return _predict_batch(args)
    if args.ray is not None or args.resume:
        raise InputError("--ray and --resume run a batch: give --input-dir or --input-parquet and --output-parquet")

    model = load_model(args.model, device=args.device, function_name=args.function)
    try:
        runner = model.runner
        features = {f.name: f for f in getattr(getattr(runner, "signature", None), "inputs", [])}
        data = dict(_read_input(spec, features.get(spec.partition("=")[0])) for spec in args.input)
        state = model.make_state() if getattr(runner, "is_stateful", False) else None
        outputs = model.predict(data, state=state, outputs=args.output) if args.output else \
            model.predict(data, state=state)
        docs = {name: _summarize(value, args.json) for name, value in outputs.items()}
        if args.json:
            json.dump(docs, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
            return 0
        for name, doc in docs.items():
            if "shape" in doc:
                print(f"{name}: {doc['dtype']}[{', '.join(str(d) for d in doc['shape'])}]")
                print("  " + str(doc["values"]).replace("\n", "\n  "))
            elif "probabilities" in doc:
                top = ", ".join(f"{k}: {v:.6g}" for k, v in doc["probabilities"].items())
                print(f"{name}: {{{top}{', ...' if len(outputs[name]) > 5 else ''}}}")
            elif "image" in doc:
                print(f"{name}: image {doc['image']}")
            else:
                print(f"{name}: {doc['value']}")
    finally:
        model.close()
    return 0


def _predict_batch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .batch import run_job
    from .errors import InputError

    if args.output_parquet is None or (args.input_dir is None) == (args.input_parquet is None):
        raise InputError("a batch needs --output-parquet and one of --input-dir and --input-parquet")
    generate = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed}
    console = Console(stderr=True)
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=console)
    task = bar.add_task("predict", total=None)

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:  # only once the inputs are found: a bad argument prints just its error
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        result = run_job(args.model, args.output_parquet, input_dir=args.input_dir, input_parquet=args.input_parquet,
                         ray_address=args.ray, resume=args.resume, batch_size=args.batch_size,
                         num_gpus_per_actor=args.gpus_per_actor, concurrency=args.concurrency, device=args.device,
                         outputs=args.output, generate=generate, function_name=args.function, progress=progress)
    finally:
        if bar.live.is_started:
            bar.stop()
    skipped = f"; {result.skipped} rows were already there" if result.skipped else ""
    failed = f" ({result.errors} failed: see their error column)" if result.errors else ""
    print(f"{result.rows} rows written to {result.output}{failed}{skipped}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import time

    import torch
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from .errors import InputError
    from .formats import open_model_file
    from .runtime import bench
    from .runtime.predictor import Predictor

    if args.batch < 1 or args.runs < 1 or args.warmup < 0:
        raise InputError("--batch and --runs must be at least 1, --warmup at least 0")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    console = Console(stderr=bool(args.json))
    start = time.perf_counter()
    file = open_model_file(args.model)
    if getattr(file, "program", None) is None:
        raise InputError(f"{args.model}: tl bench runs Core ML ML Programs; this is {file.metadata().format}")
    modes = [args.mode] + ([m for m in ("compiled", "interp") if m != args.mode] if args.compare else [])
    preds = {m: Predictor(file, device=args.device, mode=m) for m in modes[:1]}
    pred = preds[args.mode]
    data = bench.random_inputs(pred, args.batch)
    load_s = time.perf_counter() - start
    pred.predict(dict(data))
    first_s = time.perf_counter() - start - load_s
    for m in modes[1:]:
        preds[m] = Predictor(file, device=pred.device, mode=m)
    runners = {f"tensorlogic {m}": bench.ours(p, data) for m, p in preds.items()}
    if args.mode != "interp":
        runners[f"tensorlogic {args.mode} predict()"] = bench.ours_predict(pred, data)
    if args.compare and args.torch_module:
        module = bench.load_torch_module(args.torch_module)
        half = pred.device.type == "cuda" and str(file.metadata().quantization) == "F16"
        runners["pytorch eager"] = bench.torch_eager(module, data, pred.device, half, channels_last=half)
        if pred.device.type == "cuda":
            runners["pytorch cuda graph"] = bench.torch_cuda_graph(module, data, pred.device, half, half)
        else:
            runners["onnxruntime cpu"] = bench.onnxruntime_cpu(module, data, torch.get_num_threads())
    total = len(runners) * (args.runs + 1)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"bench {os.path.basename(args.model)}", total=total)
        timings = bench.compare(runners, pred.device, args.batch, args.warmup, args.runs,
                                progress=lambda _name, n: progress.advance(task, max(n, 1)))
    ours_name = f"tensorlogic {args.mode}"
    ratio = bench.ratios(timings, ours_name)
    device = torch.cuda.get_device_name(pred.device) if pred.device.type == "cuda" else \
        f"cpu, {torch.get_num_threads()} threads"
    engine_stats = getattr(pred.engine, "stats", None)
    if args.json:
        doc = {"model": args.model, "device": device, "torch": torch.__version__, "batch": args.batch,
               "load_s": load_s, "first_prediction_s": first_s, "engine": engine_stats,
               "timings": [dict(t.to_dict(), ours_over_this=ratio[t.name]) for t in timings]}
        json.dump(doc, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    console.print(f"[bold]{args.model}[/bold] on {device}, torch {torch.__version__}, batch {args.batch}")
    console.print(f"load {load_s:.2f} s, first prediction {first_s:.2f} s (includes warm-up and graph capture)")
    if engine_stats:
        console.print(f"fusions {engine_stats['fusions']}, steps {engine_stats['steps'][0]} -> "
                      f"{engine_stats['steps'][1]}, CUDA graphs {engine_stats['cuda_graphs']}")
    table = Table(title_justify="left")
    for col in ("runner", "median ms", "p90 ms", "items/s", "warm-up s", "ours/this"):
        table.add_column(col, justify="left" if col == "runner" else "right")
    for t in timings:
        table.add_row(t.name, f"{t.median:.3f}", f"{t.p90:.3f}", f"{t.throughput:,.0f}", f"{t.warmup_s:.2f}",
                      f"{ratio[t.name]:.2f}")
    console.print(table)
    return 0


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
    p.add_argument("--bench", action="store_true", help="also run the script's bench blocks, with timings")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("test", help="run the test blocks of a TensorLogic script")
    p.add_argument("file")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("predict", help="run a Core ML model on inputs read from files, or a model (or GGUF LLM) over "
                       "a folder or Parquet file into Parquet")
    p.add_argument("model")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE",
                   help="an input: .npy array, image file or .json number/list (repeat per input)")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    p.add_argument("--function", default=None, help="function of a multifunction model")
    p.add_argument("--output", "-o", action="append", default=None, metavar="NAME",
                   help="print only this output or intermediate variable (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output with every value")
    b = p.add_argument_group("batch", "predict every file of --input-dir or row of --input-parquet into "
                             "--output-parquet, in this process on --device, or on Ray Data actors with --ray; "
                             "--output keeps only those outputs")
    b.add_argument("--input-dir", metavar="DIR", help="a folder of images and .npy files (read recursively)")
    b.add_argument("--input-parquet", metavar="FILE",
                   help="a Parquet file with a column per model input (image or .npy bytes, lists, numbers), or a "
                   "'prompt' column for a GGUF LLM; its 'key' column names the rows (default: row numbers)")
    b.add_argument("--output-parquet", metavar="OUT",
                   help="a new folder of Parquet parts: key, a column per output (arrays as .npy bytes), error")
    b.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on Ray: auto (the cluster 'ray start' runs here), local (a private one in this "
                   "process) or HOST:PORT")
    b.add_argument("--batch-size", type=int, default=32, help="rows per model call (default 32)")
    b.add_argument("--gpus-per-actor", type=float, default=0, metavar="X",
                   help="GPUs per Ray actor (default 0: CPU actors)")
    b.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="Ray actors, each holding the model once (default: as many as the cluster holds)")
    b.add_argument("--resume", action="store_true", help="skip the rows --output-parquet already holds")
    b.add_argument("--max-new-tokens", type=int, default=128, help="GGUF LLM: new tokens per prompt (default 128)")
    b.add_argument("--temperature", type=float, default=0.8, help="GGUF LLM: 0 = greedy (default 0.8)")
    b.add_argument("--seed", type=int, default=None, help="GGUF LLM: sampling seed, the same for every prompt")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("bench", help="time a Core ML model: latency, throughput, and the alternatives")
    p.add_argument("model")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--batch", type=int, default=1, help="items per call (the model must accept it)")
    p.add_argument("--mode", choices=["interp", "compiled", "compile"], default="compiled",
                   help="execution path: the interpreter, the compiled path (default) or torch.compile")
    p.add_argument("--compare", action="store_true",
                   help="also time the other paths, and with --torch-module PyTorch and ONNX Runtime")
    p.add_argument("--torch-module", default=None, metavar="MODULE:FACTORY",
                   help="the original module for --compare, e.g. benchmarks.models:resnet50")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--runs", type=int, default=100, help="timed calls per runner")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per runner first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bench)

    from .llm.cli import add_commands

    add_commands(sub)

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
