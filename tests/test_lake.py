"""The lake's one partition reader and its atomic writers, on small hand-made tables."""

from __future__ import annotations

import os
from datetime import date, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sunat_pipeline.lake import store
from sunat_pipeline.lake.store import read_partitioned, replace_partition, write_partition

D1, D2, D3 = date(2026, 7, 1), date(2026, 7, 2), date(2026, 7, 3)


def _by_file(base, key: str) -> pd.DataFrame:
    """Reference: every file read on its own, in path order, unified like Arrow does, key from the path."""
    tables = []
    for f in sorted(base.glob(f"{key}=*/*.parquet")):
        t = pq.read_table(f)
        if key not in t.column_names:
            v = date.fromisoformat(f.parent.name.split("=", 1)[1])
            t = t.append_column(key, pa.array([v] * len(t), pa.date32()))
        tables.append(t)
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


@pytest.fixture
def table(tmp_path):
    """Three days; the second has two files; the last adds a column; a nullable integer and a null column."""
    base = tmp_path / "t"
    write_partition(pd.DataFrame({"id": ["a", "b"], "n": pd.array([1, None], "Int64"), "x": [0.5, 1.5],
                                  "note": [None, None], "day": [D1, D1]}), base, "day", D1)
    write_partition(pd.DataFrame({"id": ["c"], "n": pd.array([3], "Int64"), "x": [2.5], "note": ["z"]}),
                    base, "day", D2, "part-0.parquet")
    write_partition(pd.DataFrame({"id": ["d"], "n": pd.array([4], "Int64"), "x": [3.5], "note": ["y"]}),
                    base, "day", D2, "part-1.parquet")
    write_partition(pd.DataFrame({"id": ["e"], "n": pd.array([5], "Int64"), "x": [4.5], "note": ["w"],
                                  "extra": [True]}), base, "day", D3)
    # Leftovers of interrupted writes are never read.
    (base / ".day=2026-07-04.abc").mkdir()
    pq.write_table(pa.table({"id": ["ghost"]}), base / ".day=2026-07-04.abc" / "part-0.parquet")
    (base / "day=2026-07-01" / ".part-0.parquet.x.tmp").write_bytes(b"half a file")
    return base


def test_the_key_lives_in_the_path_only(table):
    for f in table.glob("day=*/*.parquet"):
        assert "day" not in pq.read_schema(f).names


def test_reads_every_partition_in_order_with_the_key_as_a_date(table):
    df = read_partitioned(table, "day")
    assert df.id.tolist() == ["a", "b", "c", "d", "e"]  # partition by partition, file by file, file order
    assert list(df.columns) == ["id", "n", "x", "note", "extra", "day"]  # the key last, as hive readers do
    assert df.day.tolist() == [D1, D1, D2, D2, D3] and df.day.dtype == object
    assert str(df.n.dtype) == "Int64" and df.n.isna().tolist() == [False, True, False, False, False]
    assert df.extra.isna().sum() == 4 and df.extra.iloc[-1]  # absent from older files: null
    pd.testing.assert_frame_equal(df, _by_file(table, "day")[df.columns])


def test_bounds_projection_and_filter(table):
    assert read_partitioned(table, "day", upto=D2).id.tolist() == ["a", "b", "c", "d"]
    assert read_partitioned(table, "day", since=D2).id.tolist() == ["c", "d", "e"]
    one = read_partitioned(table, "day", since=D2, upto=D2, columns=["day", "id"])
    assert list(one.columns) == ["day", "id"] and one.id.tolist() == ["c", "d"]
    got = read_partitioned(table, "day", columns=["id", "day"], where=ds.field("x") > 2)
    assert got.id.tolist() == ["c", "d", "e"] and got.day.tolist() == [D2, D2, D3]


def test_an_empty_read_has_the_columns_asked_for(table, tmp_path):
    for df in (read_partitioned(table, "day", upto=date(2020, 1, 1), columns=["id", "x"]),
               read_partitioned(tmp_path / "nothing", "day", empty=["id", "x"])):
        assert df.empty and list(df.columns) == ["id", "x"] and all(t == "object" for t in df.dtypes.astype(str))
    assert read_partitioned(tmp_path / "nothing", "day").shape == (0, 0)


def test_files_that_carry_the_key_keep_their_own_type_and_position(tmp_path):
    """Silver keeps its partition column in the files (a timestamp): the frame is their plain concatenation.
    An older partition that carries the key beside a newer one that does not reads as one table."""
    base = tmp_path / "silver"
    for d, ids in ((D1, ["a", "b"]), (D2, ["c"])):
        df = pd.DataFrame({"id": ids, "day": pd.Timestamp(d), "v": 1.0}).astype({"day": "datetime64[us]"})
        replace_partition(df, base / f"day={d}")
    df = read_partitioned(base, "day")
    assert list(df.columns) == ["id", "day", "v"] and str(df.day.dtype) == "datetime64[us]"
    pd.testing.assert_frame_equal(df, _by_file(base, "day"))
    write_partition(pd.DataFrame({"id": ["d"], "v": [2.0]}), base, "day", D3)  # the new convention
    assert read_partitioned(base, "day").day.tolist() == [datetime(2026, 7, d) for d in (1, 1, 2, 3)]


def test_replacing_a_partition_leaves_one_file(tmp_path):
    base = tmp_path / "t"
    write_partition(pd.DataFrame({"id": ["a"], "day": [D1]}), base, "day", D1, "part-0.parquet")
    write_partition(pd.DataFrame({"id": ["b"], "day": [D1]}), base, "day", D1, "part-1.parquet")
    path = write_partition(pd.DataFrame({"id": ["c"]}), base, "day", D1, replace=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["part-0.parquet"]
    assert read_partitioned(base, "day").id.tolist() == ["c"]
    assert sorted(p.name for p in base.iterdir()) == ["day=2026-07-01"]  # no staging folder left


def _files(base, key: str) -> list[tuple[str, str]]:
    return [(str(f), f.parent.name.split("=", 1)[1]) for f in sorted(base.glob(f"{key}=*/*.parquet"))]


@pytest.mark.parametrize("columns", [None, ["day", "id"], ["extra", "n"]])
def test_a_cached_read_is_the_scan_chunk_for_chunk(table, columns):
    """Files decoded once and kept (``_FileCache``) give the one-scan table exactly: schema and its metadata,
    values, and the chunks (an empty file's empty chunk too: chunks reach pandas' Arrow-backed columns and the
    bytes of Parquet written from them)."""
    write_partition(pd.DataFrame({"id": pd.Series([], dtype="str"), "n": pd.array([], "Int64"), "x": [],
                                  "note": pd.Series([], dtype="str")}), table, "day", date(2026, 7, 4))
    files = _files(table, "day")
    scan = store._scan([f for f, _ in files], table, "day", columns, None)
    for _ in range(2):  # decoded, then from memory
        cached = store._CACHE.table(files, "day", columns)
        assert cached.equals(scan, check_metadata=True)
        assert [[len(c) for c in col.chunks] for col in cached.columns] == \
               [[len(c) for c in col.chunks] for col in scan.columns]
    pd.testing.assert_frame_equal(read_partitioned(table, "day", columns=columns), scan.to_pandas())


def test_a_rewritten_file_is_read_again_even_with_the_same_size_and_time(tmp_path):
    base = tmp_path / "t"
    path = write_partition(pd.DataFrame({"id": ["a"]}), base, "day", D1)
    assert read_partitioned(base, "day").id.tolist() == ["a"]
    st = path.stat()
    write_partition(pd.DataFrame({"id": ["b"]}), base, "day", D1)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert read_partitioned(base, "day").id.tolist() == ["b"]


def test_the_cache_keeps_within_its_limit(tmp_path):
    base = tmp_path / "t"
    for i, d in enumerate((D1, D2, D3)):
        write_partition(pd.DataFrame({"id": [f"row{i}"] * 50, "x": range(50)}), base, "day", d)
    files = _files(base, "day")
    roomy = store._FileCache(limit=1 << 30)
    roomy.table(files, "day", None)
    one = max(cost for _, _, cost in roomy._files.values())
    cache = store._FileCache(limit=int(2.5 * one))
    assert cache.table(files, "day", None).equals(roomy.table(files, "day", None))
    assert list(cache._files) == [f for f, _ in files[1:]] and cache.size <= cache.limit  # the oldest dropped


def test_a_frame_read_again_is_the_callers_own_and_follows_its_files(tmp_path):
    """The converted frame of an unchanged table is reused, yet each reader gets its own frame: changing it
    changes no other reader's; a rewritten file gives a new frame."""
    base = tmp_path / "t"
    write_partition(pd.DataFrame({"id": ["a", "b"], "x": [1.0, 2.0]}), base, "day", D1)
    first = read_partitioned(base, "day")
    first.loc[0, "x"] = 99.0
    first.loc[1, "id"] = "q"  # an Arrow-backed string column changed in place
    assert read_partitioned(base, "day").id.tolist() == ["a", "b"]
    first["id"] = ["z", "z"]
    first["new"] = 1
    again = read_partitioned(base, "day")
    assert again.x.tolist() == [1.0, 2.0] and again.id.tolist() == ["a", "b"] and "new" not in again
    again.loc[1, "x"] = -1.0
    assert read_partitioned(base, "day").x.tolist() == [1.0, 2.0]
    assert read_partitioned(base, "day", columns=["x"]).columns.tolist() == ["x"]  # a projection is its own
    write_partition(pd.DataFrame({"id": ["c"], "x": [3.0]}), base, "day", D1)
    assert read_partitioned(base, "day").id.tolist() == ["c"]
