"""Input files: check them before any Ray work starts, then read them as Ray Datasets.

`check_source` fails fast with one clear line for the problems users actually hit: a wrong path,
an empty file, a non-UTF-8 export from a spreadsheet, a missing column. Only then does
`read_source` start the (parallel) read. A source may be an s3:// URI (core.storage) if it is
Parquet: its footer is checked without downloading the file.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
from pathlib import Path
from typing import Sequence

from core import storage
from core.errors import InputError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "json", ".json": "json"}
_CHUNK = 1 << 20


def source_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unsupported file type '{path.suffix}' (use {', '.join(sorted(FORMATS))})")
    return fmt


def check_source(path: str | Path, required_columns: Sequence[str], what: str = "input") -> list[str]:
    """Validate a source file and return its column names; raise InputError naming the problem."""
    if storage.is_remote(path):
        return _check_remote_parquet(os.fspath(path), required_columns, what)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} path is a directory, expected a file: {path}")
    fmt = source_format(path)
    if path.stat().st_size == 0:
        raise InputError(f"{what} file is empty: {path}")
    if fmt == "parquet":
        columns, rows = _parquet_columns(path)
    else:
        _check_utf8(path)
        columns, rows = _csv_columns(path) if fmt == "csv" else _jsonl_columns(path)
    if rows == 0:
        raise InputError(f"{what} file has no data rows: {path}")
    missing = [c for c in required_columns if c not in columns]
    if missing:
        raise InputError(f"{what} file {path} is missing column '{missing[0]}' (found: {', '.join(columns) or 'none'})")
    return columns


DRIVER_READ_MAX_BYTES = 1 << 30
"""A local source file up to this size is read by the job's own process (see read_source)."""
ROW_ID = "_source_row"
"""The column `read_source(row_ids=True)` adds: the row's position in its file."""


def read_source(path: str | Path, columns: Sequence[str], max_rows: int | None = None,
                rows_per_block: int = 100_000, row_ids: bool = False):
    """A Ray Dataset over the file in blocks of at most `rows_per_block` rows, so that the work on
    them runs on every CPU; CSV columns are read as strings (cleaning parses them).

    `row_ids`: a local file read here gets a ROW_ID column, each row's position in the file (prepare
    keeps the first of identical copies by it, so the same file always gives the same output); a
    file Ray Data reads itself gets none.

    A local file up to DRIVER_READ_MAX_BYTES is read here, by the same pyarrow/pandas readers Ray
    Data uses, and handed to Ray Data as near-equal blocks made without a Ray task. Ray Data reads
    one file in one task anyway; its own read also spends ~2 s listing that one file (measured, Ray
    2.60), yields unequal blocks (320k and 70k rows of 390k), and its listing task asks for a whole
    CPU. Larger files and s3:// URIs are read by ray.data.read_* and then cut into blocks.
    """
    import ray.data

    remote = storage.is_remote(path)
    location = os.fspath(path) if remote else str(Path(path))
    fmt = source_format(Path(path))
    if not remote and Path(location).stat().st_size <= DRIVER_READ_MAX_BYTES:
        table = _read_table(Path(location), fmt, columns)
        if max_rows:
            table = table.slice(0, max_rows)
        if row_ids:
            import numpy as np
            import pyarrow as pa

            table = table.append_column(ROW_ID, pa.array(np.arange(table.num_rows, dtype=np.int64)))
        n_blocks = max(1, -(-table.num_rows // rows_per_block))
        size = max(1, -(-table.num_rows // n_blocks))
        # from_blocks builds block metadata here; from_arrow would start a 1-CPU task for it.
        return ray.data.from_blocks([table.slice(i, size) for i in range(0, max(table.num_rows, 1), size)])
    if fmt == "csv":
        ds = ray.data.read_csv(location, parse_options=_csv_parse_options(),
                               convert_options=_csv_convert_options(columns))
    elif fmt == "parquet":
        ds = ray.data.read_parquet(location)
    else:
        ds = ray.data.read_json(location, lines=True)
    if max_rows:
        ds = ds.limit(max_rows)
    return ds.repartition(target_num_rows_per_block=rows_per_block)


def _csv_parse_options():
    import pyarrow.csv as pacsv

    return pacsv.ParseOptions(newlines_in_values=True)


def _csv_convert_options(columns: Sequence[str]):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}, strings_can_be_null=True)


def _read_table(path: Path, fmt: str, columns: Sequence[str]):
    """The whole file as one Arrow table, read the way ray.data.read_{csv,parquet,json} reads it."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if fmt == "csv":
            return pacsv.read_csv(path, parse_options=_csv_parse_options(), convert_options=_csv_convert_options(columns))
        if fmt == "parquet":
            return pq.read_table(path)
        return pa.Table.from_pandas(pd.read_json(path, lines=True), preserve_index=False)
    except (pa.ArrowException, ValueError) as e:
        raise InputError(f"{path} could not be read as {fmt}: {str(e).splitlines()[0][:300]}") from None


def _check_utf8(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                bad = offset + e.start
                raise InputError(f"{path} is not UTF-8 text (byte 0x{chunk[e.start]:02x} at offset {bad}); "
                                 "re-export it as UTF-8") from None
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text (truncated character at the end); re-export it as UTF-8") from None


def _csv_columns(path: Path) -> tuple[list[str], int]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return [], 0
        except csv.Error as e:
            raise InputError(f"{path}: cannot parse the CSV header ({e})") from None
        has_row = any(any(cell.strip() for cell in row) for row in _first(reader, 50))
    return [h.strip() for h in header], (1 if has_row else 0)


def _jsonl_columns(path: Path) -> tuple[list[str], int]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}: line {lineno} is not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}: line {lineno} is not a JSON object")
            return list(row), 1
    return [], 0


def _parquet_columns(path: Path) -> tuple[list[str], int]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError with long messages
        raise InputError(f"{path} is not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None
    return list(meta.schema.names), meta.num_rows


def _check_remote_parquet(uri: str, required_columns: Sequence[str], what: str) -> list[str]:
    """check_source for a URI: Parquet only (its footer is read; CSV and JSONL need a local copy)."""
    import pyarrow.parquet as pq

    if source_format(Path(uri)) != "parquet":
        raise InputError(f"{what} file {uri}: only Parquet sources are read from object storage; copy it locally")
    size = storage.file_size(uri)
    if size is None:
        raise InputError(f"{what} file not found: {uri}")
    if size == 0:
        raise InputError(f"{what} file is empty: {uri}")
    fs, path = storage.resolve(uri)
    try:
        meta = pq.ParquetFile(path, filesystem=fs).metadata
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError with long messages
        raise InputError(f"{uri} is not a readable Parquet file ({str(e).splitlines()[0][:120]})") from None
    columns = list(meta.schema.names)
    if meta.num_rows == 0:
        raise InputError(f"{what} file has no data rows: {uri}")
    missing = [c for c in required_columns if c not in columns]
    if missing:
        raise InputError(f"{what} file {uri} is missing column '{missing[0]}' (found: {', '.join(columns) or 'none'})")
    return columns


def _first(iterable, n):
    for i, item in enumerate(iterable):
        if i >= n:
            return
        yield item


__all__ = ["check_source", "read_source", "source_format", "FORMATS"]
