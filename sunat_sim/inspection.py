"""Inspection simulator: plays the customs officers of the synthetic world.

Reads day D's channel decisions (the scored Parquet, with the officers' overrides in force) and the world's
ground truth, inspects the RED (physical) and YELLOW (documentary) items as ``administration.inspect`` does
for the history (detection per channel, mechanism and officer; partial recovery; a few wrong findings;
some findings overturned later), and lands the outcomes as enforcement extracts dated when each result is
reported, corrections included (dated months later), exactly as a source system would. It is not part of
the pipeline: it is the world answering back, and the only code besides evaluation that reads the truth.
"""

from __future__ import annotations

import io
import logging
from datetime import date
from pathlib import Path

import pandas as pd

from sunat_pipeline.lake.store import atomic_write_bytes
from sunat_pipeline.selection import overrides
from sunat_pipeline.settings import Settings
from sunat_sim.administration import inspect
from sunat_sim.config import S_PIPELINE_INSPECT, rng
from sunat_sim.world import landing_name, load_world_config, truth_dir

log = logging.getLogger(__name__)
STREAM = S_PIPELINE_INSPECT  # random stream of the simulator (the legacy history's is another)


INSP_TAG = "insp"  # the landing tag of the simulator's extracts (the legacy history's are "legacy")
FINDING_COLUMNS = ["declaration_id", "item_no", "result", "revenue_recovered_usd"]


def first_findings(settings: Settings) -> pd.DataFrame:
    """What the simulated inspections of the pipeline's selections found, as first reported (a later correction
    does not change what an inspection caught): one row per inspected item."""
    files = sorted((settings.landing / "enforcement").glob(f"enforcement__*__{INSP_TAG}*.csv"))
    if not files:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    rec = pd.concat([pd.read_csv(f, dtype={"declaration_id": str, "record_id": str}) for f in files],
                    ignore_index=True)
    return rec[~rec.record_id.astype(str).str.endswith("-C")][FINDING_COLUMNS].reset_index(drop=True)


def _land(settings: Settings, day: date, reported: date, records: pd.DataFrame) -> str:
    """Land ``day``'s records reported on ``reported`` in that date's one extract of inspection results, as an
    enforcement system exports each day's reported results in one file (not one per inspection day: five GX
    validations a day instead of one). The file is not yet due (``reported`` is after ``day``), so adding to it
    rewrites nothing the pipeline has read; ``day``'s earlier rows are replaced (a re-run lands the same bytes).
    A result reported on the inspection day itself (a zero delay) gets a file of its own instead."""
    if reported <= day:
        path = settings.landing / "enforcement" / landing_name("enforcement", reported, f"insp-{day.isoformat()}")
        atomic_write_bytes(path, records.to_csv(index=False, lineterminator="\n").encode("utf-8"))
        return path.name
    path = settings.landing / "enforcement" / landing_name("enforcement", reported, INSP_TAG)
    new = pd.read_csv(io.StringIO(records.to_csv(index=False)), dtype=str, keep_default_na=False)
    if path.exists():
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        new = pd.concat([old[old.inspection_date != day.isoformat()], new], ignore_index=True)
    new = new.sort_values("inspection_date", kind="stable")  # canonical whatever order the days ran in
    atomic_write_bytes(path, new.to_csv(index=False, lineterminator="\n").encode("utf-8"))
    return path.name


# The world's truth, split by declaration date, per file version: a backtest inspects day after day in one process,
# and the file (written once with the world) is the same every day.
_TRUTH: dict[tuple, dict[date, pd.DataFrame]] = {}


def _truth_of_day(path: Path, day: date) -> pd.DataFrame:
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _TRUTH:
        truth = pd.read_parquet(path)
        by_day = {pd.Timestamp(d).date(): g.reset_index(drop=True) for d, g in truth.groupby("declaration_date",
                                                                                               sort=False)}
        _TRUTH.clear()
        _TRUTH[key] = by_day
    got = _TRUTH[key].get(day)
    return got if got is not None else pd.read_parquet(path).iloc[:0]


def inspect_day(settings: Settings, day: date) -> dict:
    scored_path = settings.scored_dir / f"declaration_date={day.isoformat()}" / "part-0.parquet"
    if not scored_path.exists():
        raise FileNotFoundError(f"no channel decisions for {day} at {scored_path}: score the day first")
    scored = pd.read_parquet(scored_path, columns=["declaration_id", "item_no", "channel"])
    scored = overrides.apply(settings, day, scored)  # officers' overrides in force for the day
    cfg = load_world_config(settings.lake)
    tdir = truth_dir(settings.lake)
    truth = _truth_of_day(tdir / "items.parquet", day)
    items = scored.merge(truth.drop(columns=["declaration_date"]), on=["declaration_id", "item_no"], how="left")
    if items.is_fraud.isna().any():
        raise RuntimeError(f"{int(items.is_fraud.isna().sum())} scored items of {day} are not in the world")
    items["is_fraud"] = items.is_fraud.astype(bool)
    items[["mechanism", "scheme"]] = items[["mechanism", "scheme"]].fillna("")
    officers = pd.read_parquet(tdir / "officers.parquet")
    rec, seen = inspect(items, items.channel.to_numpy(), cfg, officers, day,
                        rng(cfg.seed, STREAM, cfg.index(day)), stream=STREAM)
    written = [_land(settings, day, reported, g) for reported, g in rec.groupby("reported_date", sort=True)]
    first = ~rec.record_id.str.endswith("-C")
    summary = {"date": day.isoformat(), "inspected_items": int(first.sum()),
               "frauds_found": int((rec.result[first] == "FRAUD").sum()),
               "revenue_recovered_usd": round(float(rec.revenue_recovered_usd[first].sum()), 2),
               "corrections_later": int((~first).sum()), "files": written}
    log.info("inspection %s: %d items inspected, %d frauds found, %.0f USD recovered, %d findings to be overturned "
             "later; landed %s", day, summary["inspected_items"], summary["frauds_found"],
             summary["revenue_recovered_usd"], summary["corrections_later"], written)
    return summary
