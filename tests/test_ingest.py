"""Landing -> bronze/quarantine -> silver: nothing lost, nothing doubled, bad batches quarantined with a report."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import pandas as pd
import pytest

from sunat_pipeline import ingest
from sunat_pipeline.ingest.sources import SOURCES
from sunat_pipeline.settings import get_settings
from sunat_sim.world import WorldConfig, generate

CFG = WorldConfig(seed=7, history_days=40, live_days=3, declarations_per_day=40, min_delay_days=1, max_delay_days=1)
HIST_END = CFG.first_live_date - timedelta(days=1)
D1, D2, D3 = CFG.live_dates


def _settings(tmp):
    return get_settings(lake_root=tmp / "data", mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db")


def _ingest_all(settings, upto: date) -> dict[str, list]:
    return {s: ingest.ingest_source(settings, s, upto) for s in SOURCES}


@pytest.fixture(scope="module")
def world_lake(tmp_path_factory):
    """A generated world, not yet ingested (tests copy the landed files they need)."""
    settings = _settings(tmp_path_factory.mktemp("ingest_world"))
    generate(CFG, settings.lake)
    return settings


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, world_lake):
    """History and the first live day ingested, in a lake of its own."""
    settings = _settings(tmp_path_factory.mktemp("ingested"))
    shutil.copytree(world_lake.landing, settings.landing)
    outcomes = _ingest_all(settings, D1)
    return settings, outcomes


def _landed(settings, source: str, upto: date) -> list:
    return [p for p in sorted((settings.landing / source).glob("*.csv"))
            if date.fromisoformat(p.name.split("__")[1].removesuffix(".csv")) <= upto]


def test_history_ingests_and_reconciles(ingested):
    settings, outcomes = ingested
    for source, outs in outcomes.items():
        assert [o.name for o in outs] == [p.name for p in _landed(settings, source, D1)], source
    statuses = {o.name: o.status for outs in outcomes.values() for o in outs}
    assert statuses[f"customs__{HIST_END}__history.csv"] == "accepted"
    assert statuses[f"customs__{D1}.csv"] == "accepted"
    assert statuses[f"enforcement__{HIST_END}__history.csv"] == "accepted"
    rec = ingest.reconcile(settings, D1)
    n_files = sum(len(v) for v in outcomes.values())
    assert rec["landed"] == n_files == rec.get("bronze", 0) + rec.get("quarantine", 0)
    # Files not yet due (later live days) are neither ingested nor required.
    assert not any(o.name == f"customs__{D2}.csv" for o in outcomes["customs"])


def test_every_landed_file_is_in_bronze_or_quarantine(ingested):
    settings, outcomes = ingested
    man = ingest.manifest(settings)
    for outs in outcomes.values():
        for o in outs:
            row = man[(man.source == o.source) & (man.sha256 == o.sha256)]
            assert len(row) == 1
            where = row.stored_at.iloc[0]
            folder = settings.bronze / o.source if where == "bronze" else settings.quarantine / o.source
            copies = list(folder.rglob(f"{o.sha256[:12]}__{o.name}"))
            assert len(copies) == 1
            assert copies[0].read_bytes() == (settings.landing / o.source / o.name).read_bytes()
            assert (where == "quarantine") == (o.status == "rejected")


def test_silver_holds_the_accepted_rows_typed(ingested):
    settings, outcomes = ingested
    for source, outs in outcomes.items():
        rows = sum(o.rows for o in outs if o.status != "rejected")
        assert len(ingest.silver(settings, source)) == rows, source
    c = ingest.silver(settings, "customs")
    assert str(c.item_no.dtype) == "Int64"
    assert pd.api.types.is_datetime64_any_dtype(c.declaration_date)
    assert pd.api.types.is_float_dtype(c.cif_usd)
    assert not c.duplicated(["declaration_id", "item_no"]).any()
    day = ingest.silver(settings, "customs", upto=D1, since=D1)
    assert len(day) and (day.declaration_date == pd.Timestamp(D1)).all()
    hist = ingest.silver(settings, "customs", upto=HIST_END)
    assert len(hist) + len(day) == len(c)
    # Reference prices are partitioned by the date of the issue (extract) that published them.
    ref = ingest.silver(settings, "reference_prices")
    issued = {pd.Timestamp(f.stem.split("__")[1]) for f in (settings.landing / "reference_prices").glob("*.csv")}
    assert set(ref.effective_date) == {d for d in issued if d <= pd.Timestamp(D1)}
    assert (settings.silver / "customs" / f"declaration_date={D1}" / "part-0.parquet").exists()


def test_reingesting_the_same_files_is_a_no_op(ingested):
    settings, _ = ingested
    before = {s: ingest.silver(settings, s) for s in SOURCES}
    n_manifest = len(ingest.manifest(settings))
    again = _ingest_all(settings, D1)
    assert all(o.status == "duplicate" and o.rows == 0 for outs in again.values() for o in outs)
    for s in SOURCES:
        pd.testing.assert_frame_equal(ingest.silver(settings, s), before[s])
    assert len(ingest.manifest(settings)) == n_manifest


def test_same_file_landing_again_under_another_name_is_a_no_op(ingested):
    settings, _ = ingested
    before = ingest.silver(settings, "customs")
    src = settings.landing / "customs" / f"customs__{D1}.csv"
    shutil.copyfile(src, settings.landing / "customs" / f"customs__{D1}__resent.csv")
    outs = ingest.ingest_source(settings, "customs", D1)
    assert {o.name: o.status for o in outs}[f"customs__{D1}__resent.csv"] == "duplicate"
    pd.testing.assert_frame_equal(ingest.silver(settings, "customs"), before)


@pytest.fixture
def day_lake(tmp_path, world_lake):
    """A fresh lake holding only the live-day customs extracts of the world."""
    settings = _settings(tmp_path)
    (settings.landing / "customs").mkdir(parents=True)
    for d in CFG.live_dates:
        name = f"customs__{d}.csv"
        shutil.copyfile(world_lake.landing / "customs" / name, settings.landing / "customs" / name)
    return settings


def _csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False, lineterminator="\n").encode()


def test_bad_files_are_quarantined_with_a_report_and_good_files_still_ingest(day_lake):
    settings = day_lake
    folder = settings.landing / "customs"
    good = pd.read_csv(folder / f"customs__{D1}.csv", dtype=str, keep_default_na=False)
    bad = {
        f"customs__{D1}__nocol.csv": _csv(good.drop(columns=["fob_usd"])),
        f"customs__{D1}__empty.csv": b"",
        f"customs__{D1}__header.csv": _csv(good.iloc[:0]),
        "customs__notadate.csv": _csv(good.head(3)),
        f"customs__{D2}__negative.csv": _csv(good.head(5).assign(
            declaration_id=lambda x: x.declaration_id + "N", fob_usd="-10.0", fob_invoice="-10.0")),
        f"customs__{D2}__dupkey.csv": _csv(pd.concat([good.head(2), good.head(1)]).assign(
            declaration_id=lambda x: x.declaration_id + "K")),
        f"customs__{D2}__notnumber.csv": _csv(good.head(3).assign(
            declaration_id=lambda x: x.declaration_id + "T", cif_usd="abc")),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / f".customs__{D3}__partial.csv").write_bytes(b"declaration_id\n")  # hidden: still copying

    outs = {o.name: o for o in ingest.ingest_source(settings, "customs", D3)}
    assert f".customs__{D3}__partial.csv" not in outs
    for d in CFG.live_dates:
        assert outs[f"customs__{d}.csv"].status == "accepted"
    for name in bad:
        assert outs[name].status == "rejected", name
        q = list((settings.quarantine / "customs").glob(f"*__{name}"))
        assert len(q) == 1 and q[0].read_bytes() == bad[name]
        txt = q[0].with_name(q[0].name + ".report.txt").read_text()
        rep = json.loads(q[0].with_name(q[0].name + ".report.json").read_text())
        assert txt.strip() and rep
    reason = {n: (settings.quarantine / "customs").glob(f"*__{n}.report.txt") for n in bad}
    reason = {n: next(g).read_text() for n, g in reason.items()}
    assert "missing columns ['fob_usd']" in reason[f"customs__{D1}__nocol.csv"]
    assert "empty" in reason[f"customs__{D1}__empty.csv"]
    assert "expect_table_row_count_to_be_between" in reason[f"customs__{D1}__header.csv"]
    assert "does not follow the landing contract" in reason["customs__notadate.csv"]
    neg = reason[f"customs__{D2}__negative.csv"]
    assert "REJECTED" in neg and "fob_usd" in neg and "expect_column_values_to_be_between" in neg
    assert "expect_compound_columns_to_be_unique" in reason[f"customs__{D2}__dupkey.csv"]
    assert "cif_usd" in reason[f"customs__{D2}__notnumber.csv"]

    # Good files reached silver; no row of a rejected file did.
    silver = ingest.silver(settings, "customs")
    goods = [pd.read_csv(folder / f"customs__{d}.csv", dtype=str) for d in CFG.live_dates]
    assert len(silver) == sum(len(g) for g in goods)
    assert not silver.declaration_id.str.endswith(("N", "K", "T")).any()
    rec = ingest.reconcile(settings, D3)
    assert rec == {"landed": 3 + len(bad), "bronze": 3, "quarantine": len(bad)}
    man = ingest.manifest(settings)
    assert (man[man.stored_at == "quarantine"].validation == "rejected").all()
    # A quarantined file is remembered: landing it again changes nothing.
    again = ingest.ingest_source(settings, "customs", D3)
    assert all(o.status == "duplicate" for o in again)


def test_misnamed_file_relanded_under_its_right_name_is_ingested(day_lake):
    """Regression: the quarantined misnamed copy must not make the right-named file a 'duplicate'."""
    settings = day_lake
    folder = settings.landing / "customs"
    data = (folder / f"customs__{D1}.csv").read_bytes()
    for d in CFG.live_dates:
        (folder / f"customs__{d}.csv").unlink()
    (folder / f"customs_{D1}.csv").write_bytes(data)  # one underscore: not the contract
    assert [o.status for o in ingest.ingest_source(settings, "customs", D1)] == ["rejected"]
    assert ingest.silver(settings, "customs").empty
    (folder / f"customs__{D1}.csv").write_bytes(data)
    outs = {o.name: o.status for o in ingest.ingest_source(settings, "customs", D1)}
    assert outs == {f"customs_{D1}.csv": "duplicate", f"customs__{D1}.csv": "accepted"}
    assert len(ingest.silver(settings, "customs")) == data.count(b"\n") - 1
    assert ingest.reconcile(settings, D1)["landed"] == 2
    assert all(o.status == "duplicate" for o in ingest.ingest_source(settings, "customs", D1))


def test_reconcile_raises_for_a_landed_file_never_ingested(day_lake):
    settings = day_lake
    ingest.ingest_source(settings, "customs", D3)
    assert ingest.reconcile(settings, D3)["bronze"] == 3
    late = D3 + timedelta(days=5)
    data = (settings.landing / "customs" / f"customs__{D3}.csv").read_bytes()
    (settings.landing / "customs" / f"customs__{late}__late.csv").write_bytes(data + b"")
    ingest.reconcile(settings, D3)  # not due yet: fine
    (settings.landing / "customs" / f"customs__{D3}__other.csv").write_bytes(data.replace(b"\n", b"\r\n"))
    with pytest.raises(RuntimeError, match="reconciliation failed"):
        ingest.reconcile(settings, D3)


def test_silver_dedupes_on_the_business_key_later_file_wins(day_lake):
    settings = day_lake
    folder = settings.landing / "customs"
    for d in (D2, D3):
        (folder / f"customs__{d}.csv").unlink()
    ingest.ingest_source(settings, "customs", D1)
    first = ingest.silver(settings, "customs")
    good = pd.read_csv(folder / f"customs__{D1}.csv", dtype=str, keep_default_na=False)
    key = (good.declaration_id.iloc[0], int(good.item_no.iloc[0]))

    # A corrected extract the next day: one row with a new value, same declaration date.
    fix = good.head(1).assign(fob_usd="1.0", fob_invoice="1.0")
    (folder / f"customs__{D2}__fix.csv").write_bytes(_csv(fix))
    # A re-extract of the whole day in another order: other bytes, the same rows.
    (folder / f"customs__{D2}__reextract.csv").write_bytes(_csv(good.iloc[::-1]))
    outs = {o.name: o for o in ingest.ingest_source(settings, "customs", D2)}
    assert outs[f"customs__{D2}__fix.csv"].status == "accepted"
    assert outs[f"customs__{D2}__reextract.csv"].status == "accepted"
    # Files are applied in name order: __fix then __reextract; the reextract (last) wins for the key.
    s = ingest.silver(settings, "customs")
    assert len(s) == len(first) == len(good)
    assert not s.duplicated(["declaration_id", "item_no"]).any()
    row = s[(s.declaration_id == key[0]) & (s.item_no == key[1])]
    assert len(row) == 1 and row.fob_usd.iloc[0] == float(good.fob_usd.iloc[0])
    assert row._batch_sha256.iloc[0] == outs[f"customs__{D2}__reextract.csv"].sha256

    # A later correction alone supersedes the row.
    fix2 = good.head(1).assign(fob_usd="2.5", fob_invoice="2.5")
    (folder / f"customs__{D3}__fix.csv").write_bytes(_csv(fix2))
    outs = {o.name: o for o in ingest.ingest_source(settings, "customs", D3)}
    s = ingest.silver(settings, "customs")
    assert len(s) == len(good)
    row = s[(s.declaration_id == key[0]) & (s.item_no == key[1])]
    assert len(row) == 1 and row.fob_usd.iloc[0] == 2.5
    assert row._batch_sha256.iloc[0] == outs[f"customs__{D3}__fix.csv"].sha256
    # Re-running the day leaves exactly one Parquet file in the partition.
    assert len(list((settings.silver / "customs" / f"declaration_date={D1}").glob("*.parquet"))) == 1


def test_read_typed_contract(tmp_path):
    spec = SOURCES["exchange_rates"]
    p = tmp_path / "exchange_rates__2026-01-01.csv"
    p.write_text("rate_date,currency,pen_per_unit,extra\n2026-01-01, USD ,3.75,x\n2026-01-02,USD,,y\n")
    df = ingest.read_typed(p, spec)
    assert list(df.columns) == list(spec.columns)
    assert df.currency.tolist() == ["USD", "USD"]
    assert df.pen_per_unit.iloc[0] == 3.75 and pd.isna(df.pen_per_unit.iloc[1])
    assert df.rate_date.iloc[1] == pd.Timestamp("2026-01-02")
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ingest.BadFileError):
        ingest.read_typed(p, spec)
