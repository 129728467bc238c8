"""Feedback: inspection outcomes -> offence database -> a new, versioned set of rule weights.

Day D's feedback folds into version ``rw-D`` every enforcement record (silver, reported up to D) that no
earlier version folded in, whatever its reported date: an extract that lands late with an already
processed reported date is counted by the next version instead of being lost. What a version folded is
recorded twice: as rows of the offence database tagged ``folded_in = rw-D`` (the ledger), and in the
version's JSON (the batches, the number of records and a checksum of their keys).

The offence database (``gold/offences/reported_date=R/part-0.parquet``; the reported date lives in the
path only, readers get it back as a column) is append-only and deduplicated:
a row is one version of an enforcement record, keyed by ``record_id`` and ``record_hash`` (a hash of the
record's values), joined to the decision that caused the inspection (the scored output, or ``legacy`` for
history) and to the rules that hit the item as of its declaration date. The same record landing again
adds nothing. A correction (the same ``record_id`` re-reported with other values, or a later record for
the same declaration item) adds a row and supersedes the earlier one, which stays with
``is_current = False`` and ``superseded_by = "<record_id>:<record_hash>"``: history is kept, and
``offences(settings)`` returns the current rows.

The rule weights (``weights``) are derived from the change of current outcomes each version brings.

A version, once written, is immutable: re-running its day re-derives it from exactly the records it
folded (the ledger), so the re-run rewrites nothing and creates no version. Records that arrived since
wait for the next version.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import OrderedDict
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sunat_pipeline import ingest
from sunat_pipeline.features.build import build_features, item_frame
from sunat_pipeline.feedback import stacking
from sunat_pipeline.feedback.chains import current_view, row_key
from sunat_pipeline.feedback.weights import (
    INITIAL,
    derive,
    load_version,
    version_before,
    version_date,
    versions,
    write_version,
)
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.lake.store import atomic_write_bytes, partition, read_partitioned
from sunat_pipeline.selection import overrides
from sunat_pipeline.selection.output import read_scored
from sunat_pipeline.selection.rules import evaluate, load_rules
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)

RECORD_COLUMNS = list(SOURCES["enforcement"].columns)  # the enforcement record as reported
ITEM_COLUMNS = ["declaration_date", "customs_office", "importer_id", "hs_code"]  # from the declaration
DECISION_COLUMNS = ["selection_reason", "model_version", "rule_weights_version", "run_id"]  # from the scoring
LEDGER_COLUMNS = ["rule_hits", "record_hash", "batch_sha256", "folded_in", "is_current", "superseded_by"]
_DB_COLUMNS = RECORD_COLUMNS + ITEM_COLUMNS + DECISION_COLUMNS + LEDGER_COLUMNS
_DATES = ("inspection_date", "reported_date", "declaration_date")
_PARTITION = "reported_date"  # one partition per reported date, in the path only
_FLOATS = ("revenue_recovered_usd", "penalty_usd")


def _offences_dir(settings: Settings) -> Path:
    return settings.gold / "offences"


# --- the offence database --------------------------------------------------------------------------------

def record_hash(records: pd.DataFrame) -> pd.Series:
    """16 hex digits of sha256 over a record's values (the enforcement columns but its reported date).

    The same record sent again, on the same or a later date, has the same hash and adds nothing.
    """
    parts = []
    for c in RECORD_COLUMNS:
        if c == "reported_date":
            continue
        s = records[c]
        if c in _DATES:
            s = pd.to_datetime(s).dt.strftime("%Y-%m-%d")
        elif c in _FLOATS:
            s = pd.Series([repr(round(float(v), 6)) if pd.notna(v) else "" for v in s], index=records.index)
        elif c == "item_no":
            s = pd.Series([str(int(v)) if pd.notna(v) else "" for v in s], index=records.index)
        parts.append(s.astype("str").fillna(""))
    if not len(records):
        return pd.Series([], dtype="str", index=records.index)
    joined = parts[0].str.cat(parts[1:], sep="\x1f")
    return pd.Series([hashlib.sha256(x.encode()).hexdigest()[:16] for x in joined], index=records.index,
                     dtype="str")


def _known_hashes(enf: pd.DataFrame, folded: pd.DataFrame) -> pd.Series:
    """``record_hash`` of each enforcement row (``batch_sha256`` named so), computed only for rows the ledger
    does not know: a row the ledger folded from the same batch (same record id and reported date) has the
    values that batch gave it, so the hash the ledger recorded. A day's hashing is then proportional to the
    records that arrived since, not to the whole history."""
    key = ["record_id", "batch_sha256", "reported_date"]
    if folded.empty or enf.empty:
        return record_hash(enf)
    known = folded[key + ["record_hash"]].astype({"record_id": "str", "batch_sha256": "str", "record_hash": "str"})
    known = known.assign(reported_date=pd.to_datetime(known.reported_date).astype("datetime64[us]"))
    known = known[known.batch_sha256.str.len() == 64].drop_duplicates()
    known = known[~known.duplicated(key, keep=False)]  # one hash per key, or none trusted
    rows = enf[key].astype({"record_id": "str", "batch_sha256": "str"}).assign(
        reported_date=pd.to_datetime(enf.reported_date).astype("datetime64[us]"))
    found = rows.merge(known, on=key, how="left").record_hash.to_numpy(dtype=object)
    todo = pd.isna(found)
    if todo.any():
        found[todo] = record_hash(enf[todo]).to_numpy(dtype=object)
    return pd.Series(found, index=enf.index, dtype="str")


def _has(keys: pd.Series, among: pd.Series) -> np.ndarray:
    """``keys.isin(among)`` through a hash table of Python strings: the string dtype's own ``isin`` makes an
    Arrow scalar of every value sought, about a second a day once the offence database holds the history."""
    return keys.astype(object).isin(among.astype(object)).to_numpy(dtype=bool)


def _columns(df: pd.DataFrame) -> list[str]:
    base = RECORD_COLUMNS + ITEM_COLUMNS + DECISION_COLUMNS
    extra = [c for c in df.columns if c not in _DB_COLUMNS]
    return base + extra + LEDGER_COLUMNS


_SEQUENCES = (list, tuple, np.ndarray)  # (a tuple built once: ``list | tuple | ...`` is built at every call)


def _sorted_ids(v) -> list[str]:
    """A row's rule ids as a sorted list of str; most rows hit no rule or one (the common cases skip the sort:
    this runs on every row of the offence database each time it is read)."""
    if not isinstance(v, _SEQUENCES):
        return []
    n = len(v)
    if n == 0:
        return []
    if n == 1:
        return [str(v[0])]
    return sorted(str(x) for x in v)


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and dtypes, so the bytes written depend only on the content."""
    df = df.reindex(columns=_columns(df)).copy()
    for c in df.columns:
        if c in _DATES:
            df[c] = pd.to_datetime(df[c]).astype("datetime64[us]")
        elif c in _FLOATS:
            df[c] = df[c].astype("float64")
        elif c == "item_no":
            df[c] = df[c].astype("Int64")
        elif c == "is_current":
            df[c] = df[c].fillna(True).astype(bool)
        elif c == "rule_hits":
            df[c] = [_sorted_ids(v) for v in df[c]]
        elif df[c].dtype == object or str(df[c].dtype) == "str":
            df[c] = df[c].astype("str")
    return df.sort_values(["record_id", "record_hash"], kind="stable").reset_index(drop=True)


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    schema = pa.Schema.from_pandas(df, preserve_index=False)
    for i, f in enumerate(schema):
        if f.name == "rule_hits":
            schema = schema.set(i, pa.field("rule_hits", pa.list_(pa.large_string())))
        elif pa.types.is_null(f.type):
            schema = schema.set(i, pa.field(f.name, pa.large_string()))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), buf, compression="zstd")
    return buf.getvalue()


def _empty_db() -> pd.DataFrame:
    return _normalise(pd.DataFrame({c: pd.Series(dtype="object") for c in _DB_COLUMNS}))


# The normalised database as last read, per folder, with the digest of every file's bytes it came from: scoring
# and feedback read it several times a day, and a process that runs day after day (a backtest) would otherwise
# rebuild the same frame each time. Any changed, added or removed file changes the digest. A bounded read
# (``upto``) is the whole frame's rows reported by then: the same rows, in the same order.
_DB_MEMO: OrderedDict[str, tuple[str, pd.DataFrame]] = OrderedDict()
_DB_MEMO_KEPT = 2


def _digest(base: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(base.glob(f"{_PARTITION}=*/*.parquet")) if base.exists() else []:
        h.update(str(f).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _read_db(settings: Settings, upto: date | None = None) -> pd.DataFrame:
    """Every row version of the offence database (history included), normalised (a copy: callers may change it)."""
    base = _offences_dir(settings)
    key, digest = str(base.resolve()), _digest(base)
    hit = _DB_MEMO.get(key)
    if hit is not None and hit[0] == digest:
        _DB_MEMO.move_to_end(key)
        db = hit[1]
    else:
        db = read_partitioned(base, _PARTITION, empty=_DB_COLUMNS)
        missing = [c for c in ("record_hash", "folded_in") if c not in db.columns]
        if missing:
            raise RuntimeError(f"the offence database under {base} predates the ledger columns {missing}: delete "
                               "gold/offences and gold/rule_weights and re-run feedback from the first live day")
        db = _normalise(db)
        _keep(key, digest, db)
    if upto is not None:
        return db[(db[_PARTITION] < pd.Timestamp(upto) + pd.Timedelta(days=1)).to_numpy()].reset_index(drop=True)
    return db.copy()


def _keep(key: str, digest: str, db: pd.DataFrame) -> None:
    _DB_MEMO[key] = (digest, db)
    _DB_MEMO.move_to_end(key)
    while len(_DB_MEMO) > _DB_MEMO_KEPT:
        _DB_MEMO.popitem(last=False)


def _remember(settings: Settings, db: pd.DataFrame) -> None:
    """After feedback wrote ``db`` (normalised): keep it as the memo of what is now on disk (a read would rebuild
    the same frame from the files just written, and feedback writes every day: without this, each day's first
    read rebuilds the whole database)."""
    base = _offences_dir(settings)
    _keep(str(base.resolve()), _digest(base), db)


def offences(settings: Settings, upto: date | None = None, *, current: bool = True,
             asof: date | None = None) -> pd.DataFrame:
    """The offence database.

    ``upto``: only records reported on or before that day. ``current``: only current rows (one per record
    and declaration item); ``False`` returns the whole history. ``asof``: the database as it stood after day
    ``asof``'s feedback (rows folded in by versions dated on or before it, flags recomputed), so reports of
    a past day are reproducible whatever arrived since.
    """
    db = _read_db(settings, upto=upto)
    if asof is not None:
        db = current_view(db[db.folded_in <= f"rw-{asof.isoformat()}"])
    if current:
        db = db[db.is_current]
    return db.reset_index(drop=True)


def _decisions(settings: Settings, dates: list[date]) -> pd.DataFrame:
    """Channel decisions of the pipeline for the given declaration dates (empty for history days), with
    the rules that hit each item when it was scored."""
    cols = ["declaration_id", "item_no", *DECISION_COLUMNS, "rule_hits"]
    dates = set(dates)
    dec = read_scored(settings, since=min(dates), upto=max(dates)) if dates else pd.DataFrame()
    dec = dec[dec.declaration_date.isin(dates)] if len(dec) else dec
    if dec.empty:
        return pd.DataFrame(columns=cols)
    # Columns a day's file lacks (an older schema version) read as missing.
    return dec.reindex(columns=cols).reset_index(drop=True)


def _new_records(settings: Settings, day: date, folded: pd.DataFrame, version: str) -> pd.DataFrame:
    """Offence rows for every enforcement record reported by ``day`` that no version has folded in yet."""
    enf_all = ingest.silver(settings, "enforcement", upto=day)
    if enf_all.empty:
        return _empty_db()
    enf = enf_all.rename(columns={"_batch_sha256": "batch_sha256"})
    if "batch_sha256" not in enf:
        enf["batch_sha256"] = ""
    enf["record_hash"] = _known_hashes(enf, folded)
    enf = enf.drop_duplicates(["record_id", "record_hash"], keep="first")  # a re-send adds nothing
    enf = enf[~_has(row_key(enf), row_key(folded))]
    enf = enf.sort_values(["reported_date", "record_id"], kind="stable").reset_index(drop=True)
    if enf.empty:
        return _empty_db()
    key = ["declaration_id", "item_no"]
    customs = ingest.silver(settings, "customs", upto=day)
    # The records' declarations first (a day's few among every item of customs; a short list to look for, so the
    # string dtype's own isin is the quick one here), then their items.
    declared = customs[customs.declaration_id.isin(enf.declaration_id.drop_duplicates()).to_numpy()]
    items = declared.merge(enf[key].drop_duplicates(), on=key).reset_index(drop=True)
    dec = _decisions(settings, list(pd.to_datetime(items.declaration_date).dt.date.unique()))
    # Only the decisions of these records' items are looked up (the range read holds every item of those days).
    mine = pd.MultiIndex.from_arrays([dec.declaration_id.astype("str"), dec.item_no.astype("int64")]).isin(
        pd.MultiIndex.from_arrays([enf.declaration_id.astype("str"), enf.item_no.astype("int64")])) \
        if len(dec) and enf.item_no.notna().all() and dec.item_no.notna().all() else np.ones(len(dec), bool)
    hits_by_item = {(d, int(i)): list(h) for d, i, h in zip(dec.declaration_id[mine], dec.item_no[mine],
                                                             dec.rule_hits[mine], strict=True)
                    if isinstance(h, list | np.ndarray)}
    rows = enf[[*RECORD_COLUMNS, "record_hash", "batch_sha256"]].merge(
        items[key + ITEM_COLUMNS], on=key, how="left").merge(dec.drop(columns="rule_hits"), on=key, how="left")
    rows["selection_reason"] = rows.selection_reason.fillna("legacy")
    rows = overrides.attach(settings, rows)  # an officer's override in force, kept with its outcome

    # The rules that hit each item: as recorded when the pipeline scored it, else evaluated now on the item
    # as of its declaration date (point in time), as scoring would have.
    todo = items[[(d, int(i)) not in hits_by_item for d, i in zip(items.declaration_id, items.item_no,
                                                                   strict=True)]].reset_index(drop=True)
    if len(todo):
        rules = load_rules(settings.rules_path)
        inp = {k: ingest.silver(settings, s, upto=day) for k, s in
               [("reference", "reference_prices"), ("tax", "tax"), ("fx", "exchange_rates"),
                ("permits", "permits")]}
        X = build_features(todo, customs_history=customs, outcomes=enf_all, **inp, taxes=settings.tax)
        h = evaluate(rules, item_frame(todo, X)).to_numpy()
        ids = np.array(rules.ids)
        hits_by_item.update({(d, int(i)): list(ids[row]) for d, i, row in
                             zip(todo.declaration_id, todo.item_no, h, strict=True)})
    rows["rule_hits"] = [hits_by_item.get((d, int(i)), []) if pd.notna(i) else []
                         for d, i in zip(rows.declaration_id, rows.item_no, strict=True)]
    rows["folded_in"] = version
    rows["is_current"] = True
    rows["superseded_by"] = pd.NA
    return _normalise(rows)


def _write_db(settings: Settings, new_db: pd.DataFrame, old_db: pd.DataFrame) -> int:
    """Write the partitions whose content changed (new rows, supersession flags, rolled-back rows). ``new_db`` is
    normalised (``_normalise``): a partition's rows, cut from it, keep their key order and dtypes, so each part is
    what normalising it alone gives."""
    cols = ["record_id", "record_hash", "is_current", "superseded_by"]
    old_state = old_db[cols].assign(_d=old_db.reported_date)
    new_state = new_db[cols].assign(_d=new_db.reported_date)
    diff = pd.concat([old_state, new_state]).drop_duplicates(keep=False)
    affected = sorted(pd.to_datetime(diff._d).dt.date.unique())
    written = 0
    reported = pd.to_datetime(new_db.reported_date).dt.normalize()  # once, not once per partition
    for d in affected:
        pdir = partition(_offences_dir(settings), _PARTITION, d)
        part = new_db[(reported == pd.Timestamp(d)).to_numpy()]
        target = pdir / "part-0.parquet"
        if part.empty:
            if target.exists():
                target.unlink()
            continue
        data = _parquet_bytes(part.drop(columns=_PARTITION).reset_index(drop=True))
        if not target.exists() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
            written += 1
    return written


# --- the day's feedback ----------------------------------------------------------------------------------

def update(settings: Settings, day: date) -> dict:
    """Run day ``day``'s feedback; returns a summary. Idempotent: a re-run rewrites nothing."""
    version = f"rw-{day.isoformat()}"
    committed = versions(settings)
    db = _read_db(settings)
    stored = db[db.folded_in.isin(set(committed))]  # rows of a run that never wrote its version are dropped
    rerun = version in committed
    if rerun:
        prev = load_version(settings, version)["previous"]
        new = stored[stored.folded_in == version]
    else:
        prev = version_before(settings, day)
        later = [v for v in committed if v > version]
        if later:
            log.warning("feedback %s runs after later weights versions %s exist (a backfill): it folds only "
                        "records no version has folded", day, later)
        new = _new_records(settings, day, stored, version)
    before = stored[stored.folded_in < version]
    rest = stored[stored.folded_in != version]
    after = current_view(pd.concat([rest, new], ignore_index=True))
    norm = _normalise(after)
    n_written = _write_db(settings, norm, db)
    if n_written:
        _remember(settings, norm)

    # The evidence changes by the items whose current outcome changed with this version's records.
    was = current_view(before)
    # The usual day (no later version, not a re-run): the rows kept are the rows before, so now is after.
    now = after if len(rest) == len(before) else current_view(pd.concat([before, new], ignore_index=True))
    was, now = was[was.is_current], now[now.is_current]
    added = now[~_has(row_key(now), row_key(was))]
    removed = was[~_has(row_key(was), row_key(now))]
    weights, evidence, old, method = derive(settings, day, prev, added, removed)
    stack = stacking.fit(settings, day, now, load_rules(settings.rules_path))

    rep = pd.to_datetime(new.reported_date).dt.date
    keys = sorted(row_key(new))
    rec = {"version": version, "date": day.isoformat(), "previous": prev, "weights": weights,
           "evidence": evidence, "outcomes_used": int(len(new)), "corrections": int(len(removed)),
           "late_records": int((rep <= version_date(prev)).sum()) if prev != INITIAL else 0,
           "outcome_reported_dates": [min(rep).isoformat(), max(rep).isoformat()] if len(new) else [None, None],
           "batches": sorted(set(new.batch_sha256.dropna())),
           "offence_db": {"records": len(before) + len(new), "current": len(now),
                          "frauds": int((now.result == "FRAUD").sum()),
                          "revenue_recovered_usd": round(float(now.revenue_recovered_usd.sum()), 2),
                          "pipeline": int((now.selection_reason != "legacy").sum())},
           "records_sha256": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
           "method": method, "stack": stack}
    if write_version(settings, rec) and rerun:
        log.warning("feedback %s: re-deriving %s gave different content; rewrote it", day, version)
    summary = {"version": version, "previous": prev, "rerun": rerun, "outcomes": int(len(new)),
               "frauds": int((new.result == "FRAUD").sum()),
               "revenue_recovered_usd": round(float(new.revenue_recovered_usd.sum()), 2),
               "corrections": rec["corrections"], "late_records": rec["late_records"],
               "offence_partitions_written": n_written,
               "changed_rules": sum(abs(weights[r] - old["weights"].get(r, weights[r])) > 1e-9 for r in weights)}
    log.info("feedback %s: %d records folded (%d frauds, %d corrections, %d late) -> weights %s from %s "
             "(%d rules changed)%s", day, summary["outcomes"], summary["frauds"], summary["corrections"],
             summary["late_records"], version, prev, summary["changed_rules"], " [re-run: nothing new]" if rerun
             else "")
    return summary
