"""Batch inference on Ray Data: ``predict_dataset`` maps a pool of actors, each holding the model once, over a
``ray.data.Dataset``; ``run_job`` reads a folder or Parquet file, runs it (on Ray or in this process) and writes
the results as atomic Parquet parts, skipping with ``resume`` the rows an earlier run wrote."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, JobError, UnsupportedError
from .output import PartWriter
from .sources import Source, open_source
from .worker import BatchPredictor, check_runnable


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is an extra of ray; fail here, not inside a job
    except ImportError:
        raise UnsupportedError("batch inference on Ray needs Ray Data: pip install 'ray[data]'") from None
    return ray


def connect(address: str = "local") -> None:
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start`` runs here; ``local``: start one in this
    process; else ``HOST:PORT`` or ``ray://...``). A process already connected stays on its cluster."""
    ray = _ray()
    if address not in ("local", "auto"):
        _reachable(address)
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
    if address == "local":
        # A private head on the loopback address: nothing listens beyond this machine.
        options.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError(f"--ray {address}: cannot connect to a Ray cluster ({' '.join(str(e).split())})") from None


def _reachable(address: str) -> None:
    """Fail in one line, within seconds, when nothing listens at ``address``: ``ray.init`` would retry for
    minutes before giving up."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise InputError(f"--ray {address}: cannot connect to a Ray cluster ({e.strerror or e})") from None


def _check_model(model_path: str | os.PathLike) -> None:
    """Fail here, in one line, on a model no actor could load, rather than in every actor's traceback."""
    from ..formats import open_model_file

    file = open_model_file(model_path)
    try:
        check_runnable(file, model_path)
    finally:
        file.close()


def _job_error(error: Exception) -> JobError:
    """A Ray failure as one line: the last ``Type: message`` line of the remote traceback Ray carries."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    found = [line for line in lines if ": " in line and line.split(":", 1)[0].replace(".", "").isidentifier()]
    return JobError(f"the Ray job failed: {found[-1] if found else lines[0] if lines else type(error).__name__}")


def _default_concurrency(ray: Any, num_cpus: float, num_gpus: float) -> int:
    """As many actors as the cluster holds, less one CPU's worth on CPU clusters: the read tasks need a CPU,
    and actors holding every CPU would leave them none (the job would wait forever)."""
    resources = ray.cluster_resources()
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int(resources.get("CPU", 1) // num_cpus) - 1)


def predict_dataset(model_path: str | os.PathLike, dataset: Any, *, batch_size: int = 32,
                    num_gpus_per_actor: float = 0, num_cpus_per_actor: float = 1, concurrency: int | None = None,
                    mode: str = "compiled", outputs: Sequence[str] | None = None,
                    generate: Mapping[str, Any] | None = None, prompt_column: str = "prompt",
                    function_name: str | None = None) -> Any:
    """A lazy ``ray.data.Dataset`` of the predictions of the model at ``model_path`` on ``dataset``.

    ``dataset`` is a ``ray.data.Dataset`` (a ``bytes`` column of image/``.npy`` file contents, or a column per
    model input, or ``prompt_column`` for a GGUF LLM; a ``key`` column is carried through) or a path: a folder
    of images and ``.npy`` files, or a Parquet file. ``concurrency`` actors (default: what the cluster holds)
    each load the model once, in ``mode`` (``compiled``: fused ops, CUDA graphs per batch shape on a GPU), on a
    GPU when ``num_gpus_per_actor`` > 0. Rows are ``batch_size`` at a time, stacked into one run where the
    model's first axis is a batch axis (``Predictor.predict(batch=True)``'s rule), item by item otherwise. A
    GGUF LLM generates for each prompt with the ``generate`` options (``max_new_tokens``, ``temperature``,
    ``seed``, ...). The schema is ``BatchPredictor``'s: ``key``, one column per output, ``error``.
    """
    from ..runtime.compiled import MODES

    ray = _ray()
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if mode not in MODES:
        raise InputError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    _check_model(model_path)
    connect()
    if isinstance(dataset, (str, os.PathLike)):
        path = os.fspath(dataset)
        source = open_source(input_dir=path) if os.path.isdir(path) else open_source(input_parquet=path)
        dataset = source.dataset()
    actors = concurrency or _default_concurrency(ray, num_cpus_per_actor, num_gpus_per_actor)
    threads = max(1, int(num_cpus_per_actor))
    return dataset.map_batches(
        BatchPredictor,
        fn_constructor_args=(os.fspath(model_path),),
        fn_constructor_kwargs={"device": "cuda" if num_gpus_per_actor else "cpu", "mode": mode,
                               "outputs": list(outputs) if outputs else None, "generate": dict(generate or {}),
                               "prompt_column": prompt_column, "threads": threads, "function_name": function_name},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor or None,
    )


def _quiet_ray_data() -> None:
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@dataclass
class JobResult:
    rows: int  # rows written by this run
    errors: int  # of those, rows whose error column is set
    skipped: int  # rows an earlier run had written (``resume``)
    output: str


def run_job(model_path: str, output: str, *, input_dir: str | None = None, input_parquet: str | None = None,
            ray_address: str | None = None, resume: bool = False, batch_size: int = 32,
            num_gpus_per_actor: float = 0, concurrency: int | None = None, device: str = "auto",
            mode: str = "compiled", outputs: Sequence[str] | None = None, generate: Mapping[str, Any] | None = None,
            prompt_column: str = "prompt", function_name: str | None = None,
            progress: Callable[[int, int], None] | None = None) -> JobResult:
    """Predict every row of ``input_dir`` or ``input_parquet`` into the Parquet folder ``output``.

    With ``ray_address`` the rows go through ``predict_dataset`` on that cluster; without, one ``BatchPredictor``
    runs them here on ``device``. ``progress(done, total)`` is called as rows are written (and then Ray Data's
    own progress output is switched off).
    """
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    try:
        import pyarrow  # noqa: F401 - the output (and a Parquet input) is Parquet
    except ImportError:
        raise UnsupportedError("batch jobs read and write Parquet: pip install pyarrow (or 'ray[data]')") from None
    writer = PartWriter(output, resume=resume, part_rows=max(4096, batch_size))
    done = writer.done_keys() if resume else set()
    source: Source = open_source(input_dir, input_parquet, skip=done)
    total = len(source)
    if progress:
        progress(0, total)
    if total:
        if ray_address is not None:
            connect(ray_address)
            if progress:
                _quiet_ray_data()
            tables = predict_dataset(model_path, source.dataset(), batch_size=batch_size,
                                     num_gpus_per_actor=num_gpus_per_actor, concurrency=concurrency, mode=mode,
                                     outputs=outputs, generate=generate, prompt_column=prompt_column,
                                     function_name=function_name).iter_batches(batch_size=None, batch_format="pyarrow")
        else:
            predictor = BatchPredictor(model_path, device=device, mode=mode, outputs=outputs, generate=generate,
                                       prompt_column=prompt_column, function_name=function_name)
            tables = (predictor(batch) for batch in source.batches(batch_size))
        try:
            for table in tables:
                writer.add(table)
                if progress:
                    progress(writer.rows, total)
        except Exception as e:
            if ray_address is not None and isinstance(e, _ray().exceptions.RayError):
                raise _job_error(e) from None
            raise
        finally:
            writer.flush()  # what arrived stays written, so --resume continues from there
    return JobResult(writer.rows, writer.errors, len(done), str(output))
