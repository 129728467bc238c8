"""The lake on disk: atomic writers, the one reader of partitioned tables, hashing.

Readers never see a half-written file: everything is written to a temporary name in the same folder
and moved into place with ``os.replace`` (atomic on POSIX filesystems).

Partitioned tables follow the hive convention, ``<table>/<key>=YYYY-MM-DD/*.parquet``, with the key in the
path only (``write_partition``), so pandas, pyarrow, DuckDB and Spark read a table folder as one table;
``read_partitioned`` reads any of them with the key back as a column.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow.fs import LocalFileSystem


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write one Parquet file atomically; the bytes depend only on the frame (no timestamps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_partition(df: pd.DataFrame, partition_dir: Path, filename: str = "part-0.parquet") -> Path:
    """Replace a whole partition folder atomically (a re-run leaves exactly one file, never two)."""
    partition_dir = Path(partition_dir)
    partition_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=partition_dir.parent, prefix=f".{partition_dir.name}."))
    try:
        write_parquet_atomic(df, staging / filename)
        old = None
        if partition_dir.exists():
            old = partition_dir.with_name(f".{partition_dir.name}.old-{os.getpid()}")
            os.replace(partition_dir, old)
        os.replace(staging, partition_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return partition_dir / filename


def partition(base: Path, key: str, value: date | str) -> Path:
    v = value.isoformat() if isinstance(value, date) else str(value)
    return Path(base) / f"{key}={v}"


def write_partition(df: pd.DataFrame, base: Path, key: str, value: date | str, filename: str = "part-0.parquet",
                    *, replace: bool = False) -> Path:
    """Write one file of partition ``key=value`` without the ``key`` column: the path alone carries the key
    (pandas, pyarrow, DuckDB and Spark read a hive layout wrong when the files carry it too).
    ``replace``: the file becomes the partition's only file (``replace_partition``)."""
    df = df.drop(columns=key, errors="ignore")
    pdir = partition(base, key, value)
    if replace:
        return replace_partition(df, pdir, filename)
    write_parquet_atomic(df, pdir / filename)
    return pdir / filename


def read_partitioned(base: Path, key: str, upto: date | None = None, since: date | None = None,
                     columns: list[str] | None = None, empty: Iterable[str] | None = None,
                     where: ds.Expression | None = None) -> pd.DataFrame:
    """A hive-partitioned table (``key=YYYY-MM-DD/*.parquet``), optionally bounded, as one frame.

    The key comes back as a column: from the path as a date (``datetime.date`` values), or as the files
    type it where they carry it too (silver keeps it in the files). The files' schemas are unified (a column
    absent from older files reads as null); rows come partition by partition, file by file, each in file
    order. ``columns``: projection (the key may be one of them); ``where``: a row filter pushed down to the
    files (``pyarrow.dataset.field("x") == v``). An empty table is a frame of ``empty`` (else ``columns``)
    object columns. Partitions are pruned by folder name before any file is opened; the rest
    is one Arrow scan and one conversion, several times faster than a frame per file on many partitions.

    Without ``where``, each file's decoded table is kept in memory (``_FileCache``) and reused while the file
    holds the same bytes, so a process that reads the same growing tables day after day decodes each file once.
    """
    base = Path(base)
    files: list[tuple[str, str]] = []  # (file, its partition's value as written in the folder name)
    for p in sorted(base.glob(f"{key}=*")) if base.exists() else []:
        value = p.name.split("=", 1)[1]
        d = date.fromisoformat(value)
        if (upto is None or d <= upto) and (since is None or d >= since):
            files.extend((str(f), value) for f in sorted(p.glob("*.parquet")))
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in (columns if empty is None else empty) or []})
    if where is None:
        table = _CACHE.table(files, key, columns)
        if table is not None:
            return table.to_pandas()
    return _scan([f for f, _ in files], base, key, columns, where).to_pandas()


def _scan(files: list[str], base: Path, key: str, columns: list[str] | None,
          where: ds.Expression | None) -> pa.Table:
    """One Arrow dataset scan of ``files`` (the reference semantics ``_FileCache.table`` reproduces)."""
    fmt = ds.ParquetFileFormat()
    # A dataset made from a list of files reads to a table in the list's order (pyarrow documents this for
    # datasets built from explicit files, not for discovered ones), so no sort is needed.
    schema = ds.FileSystemDatasetFactory(LocalFileSystem(), files, fmt).inspect(promote_options="permissive")
    if key in schema.names:
        part = pa.schema([schema.field(key)])
    else:
        part = pa.schema([(key, pa.date32())])
        schema = schema.append(part.field(key))
    dataset = ds.dataset(files, schema=schema, format=fmt, partitioning=ds.partitioning(part, flavor="hive"),
                         partition_base_dir=str(base))
    return dataset.to_table(columns=columns, filter=where)


class _FileCache:
    """Decoded Parquet files by path, each valid while the file holds the same bytes (compared in full on every
    read: a rewritten file, even of the same size in the same clock tick, is decoded again). Least recently
    used files are dropped past ``limit`` bytes (decoded tables plus the bytes kept to compare)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._files: OrderedDict[str, tuple[bytes, pa.Table, int]] = OrderedDict()
        self._lock = threading.Lock()

    def _file(self, path: str) -> pa.Table:
        data = Path(path).read_bytes()
        with self._lock:
            hit = self._files.get(path)
            if hit is not None and hit[0] == data:
                self._files.move_to_end(path)
                return hit[1]
        # Decoded from the bytes just compared, by the same scanner as a dataset scan (same batches).
        table = ds.ParquetFileFormat().make_fragment(pa.BufferReader(data)).to_table()
        cost = len(data) + table.nbytes
        with self._lock:
            old = self._files.pop(path, None)
            if old is not None:
                self.size -= old[2]
            if cost <= self.limit:
                self._files[path] = (data, table, cost)
                self.size += cost
            while self.size > self.limit and self._files:
                self.size -= self._files.popitem(last=False)[1][2]
        return table

    def table(self, files: list[tuple[str, str]], key: str, columns: list[str] | None) -> pa.Table | None:
        """What ``_scan`` returns without a filter, from the cached files: each file's table conformed to the
        unified schema (absent columns null, the key from the folder name where the file lacks it), in
        order. ``None`` (the caller scans) where a column asked for does not exist or repeats."""
        tables = [self._file(f) for f, _ in files]
        schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
        if key not in schema.names:
            schema = schema.append(pa.field(key, pa.date32()))
        if columns is not None and (not set(columns) <= set(schema.names) or len(set(columns)) < len(columns)):
            return None
        keep = [f for f in schema if columns is None or f.name in columns]
        target = pa.schema(keep)
        parts = []
        for t, (_, value) in zip(tables, files, strict=True):
            # Every column of a file's table has the same batches (the scanner's): take the first's lengths.
            lengths = [len(c) for c in t.column(0).chunks] if t.num_columns else []
            if columns is not None:
                t = t.select([c for c in t.column_names if c in columns])
            if key in target.names and key not in t.column_names:  # the key from the folder name
                v = pa.scalar(value).cast(target.field(key).type)
                t = t.append_column(target.field(key), pa.chunked_array([pa.repeat(v, n) for n in lengths],
                                                                         target.field(key).type))
            if t.schema.equals(target, check_metadata=False):  # the usual case: the file's columns as they are
                parts.append(t)
                continue
            cols = []
            for field in keep:
                if field.name in t.schema.names:
                    col = t.column(field.name)
                    # Cast chunk by chunk: a chunked cast drops empty chunks.
                    cols.append(col if col.type == field.type else
                                pa.chunked_array([c.cast(field.type) for c in col.chunks], field.type))
                else:
                    cols.append(pa.chunked_array([pa.nulls(n, field.type) for n in lengths], field.type))
            parts.append(pa.Table.from_arrays(cols, schema=target))
        # Chunk by chunk as the scan gives them (empty files included: the concatenation keeps every chunk): the
        # layout reaches pandas' Arrow-backed columns and, through them, the bytes of Parquet written from them.
        table = pa.concat_tables(parts).replace_schema_metadata(schema.metadata)
        return table.select(columns) if columns is not None else table


_CACHE = _FileCache(limit=int(os.environ.get("SUNAT_READ_CACHE_MB", "1024")) << 20)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
