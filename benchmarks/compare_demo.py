"""Compare two demo lakes: scored Parquet, offence database and rule-weight versions, run ids and timestamps aside.

    python -m benchmarks.compare_demo BEFORE_LAKE AFTER_LAKE [--json OUT]

Each partitioned table is read file by file with its partition key taken from the path (so a lake that keeps
the key inside the files and one that keeps it only in the path compare equal), dates normalised to
ISO text, rows sorted by the table's key. Exit 0 when everything compared is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

# Columns that legitimately differ between two runs of the same inputs.
VOLATILE = {"run_id", "scored_at", "override_recorded_at", "batch_sha256", "record_hash"}
TABLES = {  # folder under gold -> sort key
    "scored_declarations": ["declaration_date", "declaration_id", "item_no"],
    "offences": ["reported_date", "record_id"],
}
# record_hash and batch_sha256 hash the landed bytes, which carry the run ids of the scored rows that the
# inspection simulator copies into its extract; they are compared through the columns they hash.


def _read_table(folder: Path) -> pd.DataFrame:
    frames = []
    for f in sorted(folder.glob("*=*/*.parquet")):
        key, value = f.parent.name.split("=", 1)
        df = pq.read_table(f).to_pandas()
        df[key] = value  # the path is the truth for the partition key
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for c in df.columns:
        s = df[c]
        if pd.api.types.is_datetime64_any_dtype(s):
            s = s.dt.strftime("%Y-%m-%d").where(s.notna(), None)
        elif s.dtype == object and len(s) and s.map(lambda v: hasattr(v, "isoformat")).any():
            s = s.map(lambda v: v.isoformat()[:10] if hasattr(v, "isoformat") else v)
        elif s.dtype == object or str(s.dtype) in ("str", "string"):
            s = s.map(lambda v: json.dumps(list(v)) if hasattr(v, "__len__") and not isinstance(v, str) else v)
            s = s.astype(object).where(s.notna(), None)
        out[c] = s
    return pd.DataFrame(out)


def compare_table(a: pd.DataFrame, b: pd.DataFrame, key: list[str]) -> dict:
    res = {"rows": [len(a), len(b)], "only_before": sorted(set(a.columns) - set(b.columns)),
           "only_after": sorted(set(b.columns) - set(a.columns))}
    if len(a) != len(b) or not len(a):
        res["identical"] = len(a) == len(b) == 0
        return res
    a, b = _normalise(a), _normalise(b)
    a = a.sort_values(key).reset_index(drop=True)
    b = b.sort_values(key).reset_index(drop=True)
    cols = [c for c in a.columns if c in b.columns and c not in VOLATILE]
    diff = {}
    for c in cols:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            same = (x.astype(float) == y.astype(float)) | (x.isna() & y.isna())
        else:
            same = (x.astype(object).where(x.notna(), None) == y.astype(object).where(y.notna(), None)) | (
                x.isna() & y.isna())
        if not bool(same.all()):
            diff[c] = int((~same).sum())
    res.update(compared_columns=len(cols), ignored=sorted(VOLATILE & (set(a.columns) | set(b.columns))),
               differing=diff, identical=not diff)
    return res


def compare_weights(a: Path, b: Path) -> dict:
    fa, fb = sorted(p.name for p in a.glob("rw-*.json")), sorted(p.name for p in b.glob("rw-*.json"))
    differing = [n for n in fa if n in fb and json.loads((a / n).read_text()) != json.loads((b / n).read_text())]
    hist = compare_table(pd.read_parquet(a / "history.parquet"), pd.read_parquet(b / "history.parquet"),
                         ["version", "rule_id"]) if (a / "history.parquet").exists() else {}
    return {"versions": [len(fa), len(fb)], "same_names": fa == fb, "differing_versions": differing,
            "history": hist, "identical": fa == fb and not differing and hist.get("identical", False)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path, help="lake root of the first demo (the folder holding gold/)")
    p.add_argument("after", type=Path)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    out = {name: compare_table(_read_table(a.before / "gold" / name), _read_table(a.after / "gold" / name), key)
           for name, key in TABLES.items()}
    out["rule_weights"] = compare_weights(a.before / "gold" / "rule_weights", a.after / "gold" / "rule_weights")
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if a.json:
        a.json.write_text(text)
    return 0 if all(v["identical"] for v in out.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
