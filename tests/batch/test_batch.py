"""Batch inference on a real local Ray cluster, checked row by row, bit for bit, against in-process ``predict``
of the same model (compiled mode, as the actors run it)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

import tensorlogic as tl
from tensorlogic.batch import BatchPredictor, PartWriter, load_array, predict_dataset, run_job
from tensorlogic.batch.sources import open_source
from tensorlogic.cli import main as tl_main
from tensorlogic.errors import FormatError, InputError, UnsupportedError

from .conftest import N_IMAGES


def _reference_model(path: Path, monkeypatch) -> tl.Model:
    monkeypatch.setenv("TL_MODE", "compiled")
    return tl.load_model(path, device="cpu")


def _image_reference(model: tl.Model, folder: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    out = {}
    for path in sorted(folder.rglob("*.png")):
        (value,) = model.predict({"image": Image.open(path).convert("RGB")}).values()
        out[path.relative_to(folder).as_posix()] = value
    return out


def _rows(tables) -> dict[str, dict]:
    import pyarrow as pa

    table = pa.concat_tables(list(tables))
    rows = table.to_pylist()
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a row was written twice"
    return {r["key"]: r for r in rows}


def _ray_rows(ds) -> dict[str, dict]:
    return _rows(ds.iter_batches(batch_size=None, batch_format="pyarrow"))


def _parquet_rows(folder: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    return _rows([pq.read_table(part) for part in sorted(folder.glob("part-*.parquet"))])


def _same(cell: bytes, expected: np.ndarray) -> bool:
    got = load_array(cell)
    return got.dtype == expected.dtype and got.shape == expected.shape and got.tobytes() == expected.tobytes()


@pytest.fixture(scope="module")
def image_model(coreml_model) -> Path:
    return coreml_model("image_rgb")


@pytest.fixture(scope="module")
def image_reference(image_model, image_dir) -> dict[str, np.ndarray]:
    with pytest.MonkeyPatch.context() as mp:
        return _image_reference(_reference_model(image_model, mp), image_dir)


# --- on Ray ----------------------------------------------------------------------------------------


def test_ray_job_equals_in_process_predict_bit_for_bit(ray_cluster, image_model, image_dir, image_reference):
    ds = predict_dataset(image_model, image_dir, batch_size=16, concurrency=2)
    assert isinstance(ds, ray_cluster.data.Dataset)
    rows = _ray_rows(ds)
    assert set(rows) == set(image_reference) and len(rows) == N_IMAGES
    (name,) = [c for c in next(iter(rows.values())) if c not in ("key", "error")]
    for key, expected in image_reference.items():
        assert rows[key]["error"] is None
        assert _same(rows[key][name], expected), key


def test_stacked_batches_on_ray_equal_item_by_item_predict(ray_cluster, flex_batch_model, npy_dir, monkeypatch):
    model = _reference_model(flex_batch_model, monkeypatch)
    rows = _ray_rows(predict_dataset(flex_batch_model, npy_dir, batch_size=8, concurrency=2))
    assert len(rows) == 64
    for path in sorted(npy_dir.glob("*.npy")):
        (name, expected), = model.predict({"x": np.load(path)}).items()
        assert rows[path.name]["error"] is None
        assert _same(rows[path.name][name], expected), path.name


def test_corrupt_files_fail_their_rows_only(ray_cluster, image_model, image_dir, image_reference, tmp_path):
    from PIL import Image

    folder = tmp_path / "mixed"
    good = sorted(image_reference)[:20]
    for key in good:
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image_dir / key, folder / key)
    (folder / "garbage.png").write_bytes(b"this is not an image")
    (folder / "truncated.png").write_bytes((image_dir / good[0]).read_bytes()[:60])
    Image.new("RGB", (10, 10)).save(folder / "wrong_size.png")
    np.save(folder / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    rows = _ray_rows(predict_dataset(image_model, folder, batch_size=8, concurrency=2))
    assert len(rows) == 24
    assert "neither an image" in rows["garbage.png"]["error"]
    assert "damaged image" in rows["truncated.png"]["error"]
    assert "10x10" in rows["wrong_size.png"]["error"] and "12x16" in rows["wrong_size.png"]["error"]
    assert "allow_pickle" in rows["pickled.npy"]["error"]  # refused, never unpickled
    name = next(c for c in rows[good[0]] if c not in ("key", "error"))
    for key in ("garbage.png", "truncated.png", "wrong_size.png", "pickled.npy"):
        assert rows[key][name] is None
    for key in good:
        assert rows[key]["error"] is None and _same(rows[key][name], image_reference[key])


def _map_workers() -> set[int]:
    """The pids of Ray Data's actor processes (Ray titles them ``ray::MapWorker(...)``)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read().startswith(b"ray::MapWorker("):
                        pids.add(int(entry))
            except OSError:
                continue
    return pids


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds Ray's worker processes through /proc")
def test_killed_actor_is_restarted_and_the_output_is_complete(ray_cluster, image_model, image_dir, image_reference):
    def slow(batch):
        time.sleep(0.15)  # keeps the actors busy long enough for the kill to land mid-job
        return batch

    ds = open_source(input_dir=str(image_dir)).dataset().map_batches(slow, batch_size=10, batch_format="numpy")
    batches = iter(predict_dataset(image_model, ds, batch_size=10, concurrency=2).iter_batches(
        batch_size=None, batch_format="pyarrow"))
    tables = [next(batches)]
    victims = _map_workers()
    assert victims, "no Ray actor process found"
    victim = min(victims)
    os.kill(victim, signal.SIGKILL)
    tables += list(batches)
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert len(tables) > 1, "the job ended before the kill"
    rows = _rows(tables)
    assert set(rows) == set(image_reference)
    name = next(c for c in rows[next(iter(rows))] if c not in ("key", "error"))
    for key, expected in image_reference.items():
        assert rows[key]["error"] is None and _same(rows[key][name], expected), key


def test_llm_generates_over_a_prompt_column(ray_cluster, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llm.fixtures import Shape, write_llm_gguf

    gguf = write_llm_gguf(tmp_path / "tiny.gguf", "llama", "F16",
                          Shape(n_layer=1, n_embd=64, n_head=2, n_head_kv=1, n_ff=128, n_ctx=128))
    prompts = ["Hello world", "test", "Hi", "world test Hello", None]
    pq.write_table(pa.table({"prompt": prompts}), tmp_path / "prompts.parquet")
    options = {"max_new_tokens": 6, "temperature": 0.7, "seed": 3}
    rows = _ray_rows(predict_dataset(gguf, tmp_path / "prompts.parquet", batch_size=2, concurrency=1,
                                     generate=options))
    model = tl.load_model(gguf, device="cpu")
    for i, prompt in enumerate(prompts[:-1]):
        model.llm().reset()
        gen = model.generate(prompt, 6, temperature=0.7, seed=3)
        assert rows[str(i)]["error"] is None
        assert (rows[str(i)]["text"], rows[str(i)]["n_tokens"]) == (gen.text, len(gen.tokens))
    assert rows["4"]["text"] is None and "not text" in rows["4"]["error"]


def test_cli_on_ray_writes_what_in_process_writes(ray_cluster, image_model, image_dir, image_reference, tmp_path,
                                                  capsys):
    base = ["predict", str(image_model), "--input-dir", str(image_dir), "--batch-size", "32"]
    assert tl_main([*base, "--output-parquet", str(tmp_path / "ray.parquet"), "--ray", "local"]) == 0
    assert f"{N_IMAGES} rows written" in capsys.readouterr().out
    rows = _parquet_rows(tmp_path / "ray.parquet")
    name = next(c for c in rows[next(iter(rows))] if c not in ("key", "error"))
    assert all(_same(rows[k][name], v) for k, v in image_reference.items()) and len(rows) == N_IMAGES


# --- in this process -------------------------------------------------------------------------------


def test_in_process_cli_and_resume_after_a_killed_run(image_model, image_dir, image_reference, tmp_path, capsys):
    out = tmp_path / "out.parquet"
    half = tmp_path / "half"
    keys = sorted(image_reference)
    for key in keys[: len(keys) // 2]:
        (half / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image_dir / key, half / key)
    assert tl_main(["predict", str(image_model), "--input-dir", str(half), "--output-parquet", str(out),
                    "--device", "cpu"]) == 0
    # What a run killed while writing leaves: whole parts, and a temporary file that never got its name.
    (out / ".part-dead-00001.parquet.tmp").write_bytes(b"PAR1 half a part")
    before = {p.name: p.read_bytes() for p in out.glob("part-*.parquet")}
    args = ["predict", str(image_model), "--input-dir", str(image_dir), "--output-parquet", str(out), "--device",
            "cpu", "--batch-size", "7"]
    assert tl_main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert tl_main([*args, "--resume"]) == 0
    assert f"{N_IMAGES - len(keys) // 2} rows written" in capsys.readouterr().out
    assert all((out / name).read_bytes() == data for name, data in before.items())  # nothing rewritten
    assert not list(out.glob(".*.tmp"))
    rows = _parquet_rows(out)
    assert set(rows) == set(keys)
    name = next(c for c in rows[keys[0]] if c not in ("key", "error"))
    assert all(_same(rows[k][name], image_reference[k]) for k in keys)
    assert tl_main([*args, "--resume"]) == 0
    assert "0 rows written" in capsys.readouterr().out


def test_in_process_batches_are_stacked_where_the_first_axis_is_a_batch_axis(flex_batch_model, npy_dir,
                                                                               monkeypatch):
    worker = BatchPredictor(str(flex_batch_model), device="cpu")
    calls = []
    run = worker.predictor.engine.run

    def counting(tensors, **kw):
        calls.append(tensors["x"].shape[0])
        return run(tensors, **kw)

    monkeypatch.setattr(worker.predictor.engine, "run", counting)
    (batch,) = open_source(input_dir=str(npy_dir)).batches(64)
    table = worker(batch)
    assert calls == [64]
    model = _reference_model(flex_batch_model, monkeypatch)
    for key, cell in zip(table.column("key").to_pylist(), table.column(table.column_names[1]).to_pylist()):
        (expected,) = model.predict({"x": np.load(npy_dir / key)}).values()
        assert _same(cell, expected)


def test_a_bad_row_in_a_stacked_batch_fails_alone(flex_batch_model, npy_dir):
    worker = BatchPredictor(str(flex_batch_model), device="cpu")
    batch = next(open_source(input_dir=str(npy_dir)).batches(8))
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 3, 9, 9), np.float32))
    batch["bytes"][3] = buf.getvalue()
    table = worker(batch).to_pylist()
    assert [r["error"] is None for r in table] == [True] * 3 + [False] + [True] * 4
    assert "x" in table[3]["error"] and "9" in table[3]["error"]


@pytest.mark.parametrize("cells", ["npy bytes", "nested lists"])
def test_parquet_input_with_columns_and_keys(flex_batch_model, npy_dir, tmp_path, monkeypatch, cells):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(npy_dir.glob("*.npy"))[:10]
    column = [f.read_bytes() if cells == "npy bytes" else np.load(f).tolist() for f in files]
    pq.write_table(pa.table({"key": [f.stem for f in files], "x": column}), tmp_path / "in.parquet")
    result = run_job(str(flex_batch_model), str(tmp_path / "out.parquet"), input_parquet=str(tmp_path / "in.parquet"),
                     device="cpu", batch_size=4)
    assert (result.rows, result.errors) == (10, 0)
    rows = _parquet_rows(tmp_path / "out.parquet")
    model = _reference_model(flex_batch_model, monkeypatch)
    for f in files:
        # Lists arrive as float64: predict casts them to the declared type, as it does any array.
        (name, expected), = model.predict({"x": np.load(f).astype(np.float64)}).items()
        assert _same(rows[f.stem][name], expected)


def test_a_model_no_actor_can_load_fails_the_job_in_one_line(ray_cluster, image_model, image_dir, tmp_path,
                                                              capsys):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(2, np.float32)}, tmp_path / "w.safetensors")
    with pytest.raises(UnsupportedError, match="w.safetensors: batch inference runs Core ML models and GGUF"):
        predict_dataset(tmp_path / "w.safetensors", image_dir)
    # Only the actors find this out (the driver never builds the model): Ray's traceback becomes one line.
    code = tl_main(["predict", str(image_model), "--input-dir", str(image_dir), "--output-parquet",
                    str(tmp_path / "o.parquet"), "--ray", "local", "--function", "nope"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the progress bar's line
    assert code == 2 and "Traceback" not in err, err
    assert last.startswith("tl: error: the Ray job failed: ") and "no function named 'nope'" in last


def test_bad_arguments_give_one_line_errors(image_model, tmp_path, capsys):
    with pytest.raises(InputError, match="no such folder"):
        open_source(input_dir=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image or .npy files"):
        open_source(input_dir=str(tmp_path / "empty"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(FormatError, match="bad.parquet: not a readable Parquet file"):
        open_source(input_parquet=str(tmp_path / "bad.parquet"))
    (tmp_path / "taken").write_text("the user's file")
    with pytest.raises(InputError, match="exists and is a file"):
        PartWriter(tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "the user's file"
    code = tl_main(["predict", str(image_model), "--input-dir", str(tmp_path / "missing"), "--output-parquet",
                    str(tmp_path / "o.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing: no such folder" in err
    assert not (tmp_path / "o.parquet").exists()
    assert tl_main(["predict", str(image_model), "--ray", "local"]) == 2
    assert "--input-dir" in capsys.readouterr().err


def test_more_bad_inputs_give_one_line_errors(image_model, tmp_path, monkeypatch):
    import sys

    import torch
    from safetensors.torch import save_file

    from fixtures_coreml import _convert
    from llm.fixtures import Shape, write_llm_gguf
    from tensorlogic.batch.dataset import connect
    from tensorlogic.batch.worker import decode_file

    # An output folder that holds something, without --resume: refused, and left as it was.
    (tmp_path / "out.parquet").mkdir()
    (tmp_path / "out.parquet" / "notes.txt").write_text("the user's notes")
    with pytest.raises(InputError, match="out.parquet: exists and is not empty; pass --resume"):
        PartWriter(tmp_path / "out.parquet")
    assert (tmp_path / "out.parquet" / "notes.txt").read_text() == "the user's notes"
    # --resume over a part that is not Parquet: the part is named.
    (tmp_path / "old.parquet").mkdir()
    (tmp_path / "old.parquet" / "part-1.parquet").write_bytes(b"not parquet")
    with pytest.raises(FormatError, match=r"part-1\.parquet.*not a part of a batch output"):
        PartWriter(tmp_path / "old.parquet", resume=True).done_keys()
    with pytest.raises(InputError, match="a damaged .npy array"):
        decode_file(b"\x93NUMPY" + b"\x00" * 20, None)
    # A weights-only file is not a model.
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(UnsupportedError, match="runs Core ML models and GGUF LLMs; this is SafeTensors"):
        BatchPredictor(str(tmp_path / "w.safetensors"))
    # A file column for a model with two inputs: the row says which inputs it has.

    class Add(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    import coremltools as ct

    ex = (torch.zeros(1, 3), torch.zeros(1, 3))
    two = tmp_path / "two.mlpackage"
    _convert(Add().eval(), ex, [ct.TensorType(name="x", shape=(1, 3)), ct.TensorType(name="y", shape=(1, 3))], two)
    table = BatchPredictor(str(two), device="cpu")({"key": np.array(["a"], dtype=object),
                                                    "bytes": np.array([b"\x89PNG"], dtype=object)})
    assert table.column("error").to_pylist() == [
        "cannot read the input: a file feeds a model with one input; this one has 2 (x, y): give a Parquet file "
        "with a column per input"]
    # An LLM without its prompt column.
    gguf = write_llm_gguf(tmp_path / "tiny.gguf", "llama", "F16",
                          Shape(n_layer=1, n_embd=64, n_head=2, n_head_kv=1, n_ff=128, n_ctx=128))
    with pytest.raises(InputError, match="reads prompts from the column 'prompt'; the input has text"):
        BatchPredictor(str(gguf), device="cpu")({"text": np.array(["hi"], dtype=object)})
    # Nothing listening at a --ray address: one line within seconds (ray.init alone retries for minutes).
    with pytest.raises(InputError, match=r"--ray 127\.0\.0\.1:1: cannot connect to a Ray cluster"):
        connect("127.0.0.1:1")
    with pytest.raises(InputError, match="--ray somewhere: expected HOST:PORT"):
        connect("somewhere")
    # Missing optional dependencies.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(UnsupportedError, match="batch jobs read and write Parquet: pip install pyarrow"):
        run_job(str(image_model), str(tmp_path / "o.parquet"), input_dir=str(tmp_path))
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UnsupportedError, match=r"batch inference on Ray needs Ray Data: pip install 'ray\[data\]'"):
        predict_dataset(image_model, tmp_path)
