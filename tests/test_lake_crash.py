"""Crash-safe partition replace (issue 15, item 6): a writer killed (SIGKILL) at every step of
``replace_partition`` leaves readers the old partition or the new one, never nothing and never both, and the
next write cleans up and succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from sunat_pipeline.lake.store import read_partitioned, recover_partition, replace_partition, write_parquet_atomic

DAY = date(2026, 3, 4)
OLD = pd.DataFrame({"x": [1, 2, 3], "v": ["a", "b", "c"]})
NEW = pd.DataFrame({"x": [10, 20], "v": ["new", "new"]})

# The writer: replace_partition with NEW, stopping after its ``stop``-th step (a file or folder flushed to disk,
# or a rename) and waiting there to be killed; with stop 0 it counts the steps and finishes.
_WRITER = r"""
import os, sys
from pathlib import Path
import pandas as pd
from sunat_pipeline.lake import store
stop, pdir = int(sys.argv[1]), Path(sys.argv[2])
calls = 0
def step(f):
    def wrapped(*args, **kwargs):
        global calls
        out = f(*args, **kwargs)
        calls += 1
        if calls == stop:
            print("PAUSED", f.__name__, *args, flush=True)
            sys.stdin.readline()  # never answered: killed here
        return out
    return wrapped
os.replace, os.rename = step(os.replace), step(os.rename)
if hasattr(store, "_fsync"):
    store._fsync = step(store._fsync)
if hasattr(store, "_exchange"):
    store._exchange = step(store._exchange)
store.replace_partition(pd.DataFrame({"x": [10, 20], "v": ["new", "new"]}), pdir)
print("DONE", calls, flush=True)
"""


def _pdir(base: Path) -> Path:
    return base / f"day={DAY.isoformat()}"


def _read(base: Path) -> pd.DataFrame:
    return read_partitioned(base, "day").drop(columns="day", errors="ignore").reset_index(drop=True)


def _same(df: pd.DataFrame, expected: pd.DataFrame) -> bool:
    return df.shape == expected.shape and (df.astype(str).to_numpy() == expected.astype(str).to_numpy()).all()


def _writer(stop: int, pdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(stop), str(pdir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def _setup(base: Path, layout: str) -> None:
    if layout == "same_file":  # the usual re-run: the partition holds the file being replaced
        replace_partition(OLD, _pdir(base))
    elif layout == "other_files":  # the partition holds other files: swapped as a whole folder
        write_parquet_atomic(OLD.iloc[:2], _pdir(base) / "part-a.parquet")
        write_parquet_atomic(OLD.iloc[2:], _pdir(base) / "part-b.parquet")


@pytest.mark.parametrize("layout", ["same_file", "other_files", "new_partition"])
def test_a_writer_killed_at_any_step_leaves_old_or_new_and_the_next_write_recovers(tmp_path, layout):
    probe = tmp_path / "probe"
    _setup(probe, layout)
    out = _writer(0, _pdir(probe)).communicate(timeout=120)[0]
    steps = int(out.split()[-1])
    assert steps >= 2, out
    old = None if layout == "new_partition" else OLD
    bases = []
    for stop in range(1, steps + 1):
        base = tmp_path / f"{layout}-{stop}"
        _setup(base, layout)
        w = _writer(stop, _pdir(base))
        line = w.stdout.readline()
        assert line.startswith("PAUSED"), line
        seen = _read(base)  # while the writer is stopped inside the replace
        os.kill(w.pid, signal.SIGKILL)
        w.wait(timeout=60)
        after = _read(base)  # and after it died there
        for df in (seen, after):
            assert _same(df, NEW) or (_same(df, old) if old is not None else df.empty), (line, df)
        bases.append(base)
    for base in bases:
        # The next write (a retry) cleans what the killed writer left and replaces the partition.
        replace_partition(NEW.assign(x=NEW.x + 1), _pdir(base))
        assert _same(_read(base), NEW.assign(x=NEW.x + 1))
        assert [p.name for p in _pdir(base).iterdir()] == ["part-0.parquet"]
        assert [p.name for p in base.iterdir()] == [_pdir(base).name]


def test_a_partition_hidden_by_the_old_two_rename_replace_is_put_back(tmp_path):
    """The replace before this fix renamed the partition away, then the new one in: killed between the two, the
    partition was only under its old name. Recovery puts it back before anything reads or merges it."""
    pdir = _pdir(tmp_path)
    replace_partition(OLD, pdir)
    os.replace(pdir, pdir.with_name(f".{pdir.name}.old-4242"))
    assert _read(tmp_path).empty
    recover_partition(pdir)
    assert _same(_read(tmp_path), OLD)
    assert [p.name for p in tmp_path.iterdir()] == [pdir.name]


def test_the_swap_is_atomic_here_and_the_fallback_still_replaces(tmp_path, monkeypatch):
    from sunat_pipeline.lake import store

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "1").touch()
    assert store._exchange(a, b)  # this filesystem swaps atomically: the other_files case above used it
    assert [p.name for p in b.iterdir()] == ["1"] and not any(a.iterdir())
    # Without the swap (another OS or filesystem), the new file still ends up the partition's only file.
    monkeypatch.setattr(store, "_exchange", lambda x, y: False)
    _setup(tmp_path / "t", "other_files")
    replace_partition(NEW, _pdir(tmp_path / "t"))
    assert _same(_read(tmp_path / "t"), NEW) and [p.name for p in _pdir(tmp_path / "t").iterdir()] == [
        "part-0.parquet"]
