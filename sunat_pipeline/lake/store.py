"""The lake on disk: atomic writers, the one reader of partitioned tables, hashing.

Readers never see a half-written file: everything is written to a temporary name in the same folder, flushed
to disk (fsync) and moved into place with ``os.replace`` (atomic on POSIX filesystems), and the folder is
flushed so the rename survives a crash. ``replace_partition`` replaces a whole partition the same way: a writer
killed at any instant leaves the old partition or the new one visible, never nothing.

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


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's content to disk (a folder: the names in it, so a rename survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write one Parquet file atomically and durably; the bytes depend only on the frame (no timestamps)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        _fsync(Path(tmp))
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# renameat2(2) with RENAME_EXCHANGE swaps two paths atomically (Linux 3.15+, glibc 2.28+; ext4, xfs, btrfs, tmpfs).
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap folders ``a`` and ``b`` in one atomic step; False where the system or filesystem cannot."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def recover_partition(partition_dir: Path) -> None:
    """Undo what a writer killed inside ``replace_partition`` left: its staging folders and temporary files are
    removed; a partition left only under its old name (the two-rename fallback, or this module before the
    atomic swap) is put back."""
    partition_dir = Path(partition_dir)
    parent = partition_dir.parent
    if not parent.exists():
        return
    leftovers = sorted(parent.glob(f".{partition_dir.name}.*"))
    olds = [p for p in leftovers if ".old" in p.name[len(partition_dir.name) + 1:] and p.is_dir()]
    if not partition_dir.exists() and olds:
        os.replace(olds[-1], partition_dir)
        _fsync(parent)
    for p in leftovers:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for tmp in partition_dir.glob(".*.tmp") if partition_dir.exists() else []:
        tmp.unlink(missing_ok=True)


def replace_partition(df: pd.DataFrame, partition_dir: Path, filename: str = "part-0.parquet") -> Path:
    """Replace a whole partition folder: afterwards ``filename`` is its only file (a re-run leaves exactly one
    file, never two). Crash-safe: at every instant a reader sees the old partition or the new one, never
    nothing and never both, and the data is on disk (fsync) before it becomes visible:

    - a partition that holds only ``filename`` (the usual re-run): the file is replaced in place by one atomic
      rename;
    - a new partition: built in a hidden staging folder, then renamed into place;
    - a partition with other files: the staging folder and the partition are swapped in one atomic step
      (``renameat2`` ``RENAME_EXCHANGE``; where the filesystem lacks it, the new file replaces in place and the
      other files are removed after it: a reader may briefly see both).

    What a killed writer leaves behind is cleaned by the next write (``recover_partition``)."""
    partition_dir = Path(partition_dir)
    parent = partition_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover_partition(partition_dir)
    current = sorted(p.name for p in partition_dir.glob("*.parquet")) if partition_dir.exists() else None
    if current is not None and set(current) <= {filename}:
        write_parquet_atomic(df, partition_dir / filename)
        return partition_dir / filename
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{partition_dir.name}."))
    try:
        write_parquet_atomic(df, staging / filename)
        if current is None:
            os.rename(staging, partition_dir)
        elif _exchange(staging, partition_dir):
            _fsync(parent)
        else:
            os.replace(staging / filename, partition_dir / filename)
            for name in current:
                if name != filename:
                    (partition_dir / name).unlink(missing_ok=True)
            _fsync(partition_dir)
        _fsync(parent)
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
    for name in _names(base, lambda n: n.startswith(f"{key}=")):
        value = name.split("=", 1)[1]
        d = date.fromisoformat(value)
        if (upto is None or d <= upto) and (since is None or d >= since):
            part = os.path.join(base, name)
            files.extend((os.path.join(part, f), value) for f in _names(part, lambda n: n.endswith(".parquet")))
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in (columns if empty is None else empty) or []})
    if where is None:
        frame = _CACHE.frame(files, key, columns)
        if frame is not None:
            return frame
    return _scan([f for f, _ in files], base, key, columns, where).to_pandas()


def _names(folder, keep) -> list[str]:
    """The sorted names in ``folder`` that ``keep`` accepts (none if it is not a folder): what ``sorted(glob)``
    gives, through one ``scandir`` (a table read lists hundreds of partitions, several times a day)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if keep(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return []


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
        # The last frames converted, by what they came from (the very file tables, compared by identity).
        self._frames: OrderedDict[tuple, tuple[tuple[pa.Table, ...], pd.DataFrame]] = OrderedDict()

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

    def frame(self, files: list[tuple[str, str]], key: str, columns: list[str] | None) -> pd.DataFrame | None:
        """``table(...).to_pandas()``, reusing the frame of an earlier read of the same unchanged files (a
        shallow copy: under pandas' copy-on-write a caller changing its frame never changes another's)."""
        tables = tuple(self._file(f) for f, _ in files)
        memo = (tuple(f for f, _ in files), key, None if columns is None else tuple(columns))
        with self._lock:
            hit = self._frames.get(memo)
            if hit is not None and len(hit[0]) == len(tables) and all(
                    a is b for a, b in zip(hit[0], tables, strict=True)):
                self._frames.move_to_end(memo)
                return hit[1].copy(deep=False)
        table = self.table(files, key, columns, tables)
        if table is None:
            return None
        df = table.to_pandas()
        with self._lock:
            self._frames[memo] = (tables, df)
            self._frames.move_to_end(memo)
            while len(self._frames) > FRAMES_KEPT:
                self._frames.popitem(last=False)
        return df.copy(deep=False)

    def table(self, files: list[tuple[str, str]], key: str, columns: list[str] | None,
              tables: tuple[pa.Table, ...] | None = None) -> pa.Table | None:
        """What ``_scan`` returns without a filter, from the cached files: each file's table conformed to the
        unified schema (absent columns null, the key from the folder name where the file lacks it), in
        order. ``None`` (the caller scans) where a column asked for does not exist or repeats."""
        tables = tables if tables is not None else [self._file(f) for f, _ in files]
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


FRAMES_KEPT = 12  # converted frames kept (a day reads each silver table once or a few times)
_CACHE = _FileCache(limit=int(os.environ.get("SUNAT_READ_CACHE_MB", "1024")) << 20)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
