"""What a dataset path can hold, and how each is read or refused (issue 12, item 8).

A number beyond a double's range, a corrupt Parquet file, compressed JSONL, a
directory, a symbolic link loop and a named pipe: each is either read as the user
meant or refused with a message that says what it is, never a traceback or a
"not found" for a path that exists.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from graders._cli import app
from graders.datasets import Report, validate_dataset
from schemas import UserError, load_jsonl

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "total": {"type": "number"}}}
runner = CliRunner()


def row(i: int, total: Any = 10.5) -> dict[str, Any]:
    return {"prompt": f"Invoice {i}: Lima, {total}", "reference": {"city": "Lima", "total": total}}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def codes(report: Report) -> list[tuple[int, str, str]]:
    return [(i.line, i.code, i.pointer) for i in report.issues]


# --------------------------------------------------------------------------- numbers beyond a double


def test_a_number_beyond_a_double_is_reported_with_its_pointer(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl([row(1)]) + b'{"prompt": "Invoice 2", "reference": {"city": "Lima", "total": 1e400}}\n'
                     + b'{"prompt": "Invoice 3", "reference": {"city": "Lima", "total": -2.5E+999}}\n' + jsonl([row(4)]))
    report = validate_dataset(path, response_schema=SCHEMA)
    assert codes(report) == [(2, "number_out_of_range", "/reference/total"), (3, "number_out_of_range", "/reference/total")]
    assert "1e400 at /reference/total is beyond the range of a double" in report.issues[0].message
    with pytest.raises(UserError, match="line 2|:2:") as exc:
        load_jsonl(path)  # rftkit grade and rftkit train read rows with it
    assert "beyond the range of a double" in str(exc.value)


def test_a_number_beyond_a_double_inside_a_json_text_reference(tmp_path: Path) -> None:
    rows = [{"data_source": "d", "prompt": [{"role": "user", "content": f"q{i}"}],
             "reward_model": {"ground_truth": json.dumps({"city": "Lima", "total": 1.0})}} for i in range(3)]
    rows[1]["reward_model"]["ground_truth"] = '{"city": "Lima", "total": 1e400}'
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(rows))
    report = validate_dataset(path, response_schema=SCHEMA)
    assert codes(report) == [(2, "number_out_of_range", "/reward_model/ground_truth")]
    assert "1e400 at /total" in report.issues[0].message


def test_a_parquet_infinity_is_reported(tmp_path: Path) -> None:
    rows = [row(i, float(i)) for i in range(3)]
    rows[2]["reference"]["total"] = float("inf")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    report = validate_dataset(tmp_path / "d.parquet", response_schema=SCHEMA)
    assert codes(report) == [(3, "number_out_of_range", "/reference/total")]


# --------------------------------------------------------------------------- Parquet that cannot be read


@pytest.mark.parametrize("damage", ["garbage", "cut_off"])
def test_a_corrupt_parquet_file_is_a_could_not_run_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([row(i, float(i)) for i in range(50)]), path)
    data = path.read_bytes()
    path.write_bytes(b"PAR1" + b"\x00garbage" * 40 + b"PAR1" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(UserError) as exc:
        validate_dataset(path)
    assert exc.value.code == "invalid_parquet" and "not a readable Parquet file" in exc.value.message
    result = runner.invoke(app, ["validate", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output  # could not run, not "errors found"
    assert "invalid_parquet" in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- compressed JSONL


@pytest.mark.parametrize(("name", "compress"), [("d.jsonl.gz", gzip.compress), ("d.jsonl.bz2", bz2.compress),
                                                 ("d.jsonl.xz", lzma.compress), ("named_plainly.jsonl", gzip.compress)])
def test_compressed_jsonl_is_read_as_it_is(tmp_path: Path, name: str, compress: Any) -> None:
    rows = [row(i) for i in range(5)]
    rows[3]["reference"]["total"] = "ten"
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(jsonl(rows))
    packed = tmp_path / name
    packed.write_bytes(compress(jsonl(rows)))
    report = validate_dataset(packed, response_schema=SCHEMA)
    assert (report.rows, codes(report)) == (5, [(4, "reference_invalid", "/reference/total")])
    assert codes(report) == codes(validate_dataset(plain, response_schema=SCHEMA))
    assert load_jsonl(packed) == rows


def test_a_cut_off_gzip_file_is_reported_where_it_stops(tmp_path: Path) -> None:
    data = gzip.compress(jsonl([row(i) for i in range(2000)]))
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    report = validate_dataset(path, response_schema=SCHEMA)
    assert report.counts.get("invalid_compression") == 1 and report.exit_code() == 1
    bad = report.issues[-1]
    assert bad.code == "invalid_compression" and bad.line == report.rows and 1 < bad.line < 2000


@pytest.mark.parametrize("kind", ["zip", "zstd"])
def test_archives_rftkit_does_not_read_are_refused_by_name(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "d.jsonl"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("d.jsonl", jsonl([row(1)]))
    else:
        path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    with pytest.raises(UserError) as exc:
        validate_dataset(path)
    assert exc.value.code == "unsupported_compression" and f"a {kind} archive" in exc.value.message


# --------------------------------------------------------------------------- paths that are not files


def test_a_directory_is_said_to_be_one(tmp_path: Path) -> None:
    with pytest.raises(UserError) as exc:
        validate_dataset(tmp_path)
    assert exc.value.code == "dataset_not_a_file" and "is a directory" in exc.value.message
    result = runner.invoke(app, ["validate", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "is a directory" in result.output
    good = tmp_path / "d.jsonl"
    good.write_bytes(jsonl([row(1)]))
    with pytest.raises(UserError, match=r"--against file .* is a directory"):
        validate_dataset(good, against=tmp_path)


def test_symbolic_link_loops_and_dangling_links_are_said_to_be_so(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").symlink_to(tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").symlink_to(tmp_path / "a.jsonl")
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(UserError) as exc:
        validate_dataset(tmp_path / "a.jsonl")
    assert exc.value.code == "dataset_not_a_file" and "symbolic link loop" in exc.value.message
    with pytest.raises(UserError) as exc:
        validate_dataset(tmp_path / "dangling.jsonl")
    assert exc.value.code == "dataset_not_found" and "symbolic link to" in exc.value.message
    assert "gone.jsonl" in exc.value.message


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, threading.Thread]]:
    """A named pipe with a writer thread (it blocks until a reader opens the pipe, then writes five rows)."""
    path = tmp_path / "stream.jsonl"
    os.mkfifo(path)
    rows = [row(i) for i in range(5)]
    rows[2]["reference"]["total"] = "ten"

    def write() -> None:
        with open(path, "wb") as fh:
            fh.write(gzip.compress(jsonl(rows)))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    yield path, writer
    if writer.is_alive():  # the test never opened the pipe: open it, so the writer can finish
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        writer.join(10)
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_read_as_a_stream(fifo: tuple[Path, threading.Thread]) -> None:
    path, writer = fifo
    report = validate_dataset(path, response_schema=SCHEMA)
    writer.join(10)
    assert (report.rows, codes(report)) == (5, [(3, "reference_invalid", "/reference/total")])
