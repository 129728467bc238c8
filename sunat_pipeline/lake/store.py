"""Lake helpers: atomic writes, partition paths, hashing.

Readers never see a half-written file: everything is written to a temporary name in the same folder
and moved into place with ``os.replace`` (atomic on POSIX filesystems).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


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


def read_files(files: list[Path]) -> pd.DataFrame | None:
    """Many Parquet files as one frame: one Arrow concatenation and one conversion (several times faster
    than a frame per file on a lake of many small partitions). ``None`` when there are no files."""
    if not files:
        return None
    tables = [pq.read_table(f) for f in files]
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def partition(base: Path, key: str, value: date | str) -> Path:
    v = value.isoformat() if isinstance(value, date) else str(value)
    return Path(base) / f"{key}={v}"


def read_partitions(base: Path, key: str, upto: date | None = None, since: date | None = None,
                    columns: list[str] | None = None) -> pd.DataFrame:
    """Read ``key=YYYY-MM-DD`` partitions of a table, optionally bounded, with the key as a date column."""
    base = Path(base)
    frames = []
    if not base.exists():
        return pd.DataFrame(columns=columns or [])
    for p in sorted(base.glob(f"{key}=*")):
        v = date.fromisoformat(p.name.split("=", 1)[1])
        if (upto is not None and v > upto) or (since is not None and v < since):
            continue
        for f in sorted(p.glob("*.parquet")):
            df = pd.read_parquet(f, columns=columns)
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=columns or [])
    return pd.concat(frames, ignore_index=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
