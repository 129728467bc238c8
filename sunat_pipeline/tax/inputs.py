"""What the monthly tax run may know: every input read point in time, by the month's cutoff.

A run processes month M (``YYYY-MM``) from the first day of M+1 (the cutoff): the tax extracts of M land on
that day (docs/tax.md, "Timeline"), so the run sees the returns filed before the cutoff (periods up to M-1,
and late ones), the e-invoices issued up to M, the register as of the cutoff, the audits closed before it, and
the customs tables (declarations, inspection outcomes, scored items) dated before it. Every reader below
filters on the row's own date, not only on the partition, and keeps only rows of files landed by the cutoff
(their batch's available date in the manifest), so a lake that has since ingested later files gives the same
frames: a return filed, or a file landed, after the cutoff never reaches the month's features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from sunat_pipeline import ingest
from sunat_pipeline.ingest import landing
from sunat_pipeline.lake.store import read_partitioned
from sunat_pipeline.settings import Settings

DAY = timedelta(days=1)


def parse_month(month: str | pd.Period) -> pd.Period:
    """``YYYY-MM`` (or a monthly period) as a monthly period; raises ValueError on anything else."""
    if isinstance(month, pd.Period):
        return month.asfreq("M")
    s = str(month)
    if len(s) != 7 or s[4] != "-":
        raise ValueError(f"month {s!r} is not YYYY-MM")
    return pd.Period(s, "M")


def cutoff(month: str | pd.Period) -> date:
    """The first day of the month after ``month``: what the run knows is dated before it."""
    return (parse_month(month) + 1).start_time.date()


def _before(df: pd.DataFrame, col: str, cut: date) -> pd.DataFrame:
    if df.empty:
        return df
    return df[pd.to_datetime(df[col]) < pd.Timestamp(cut)]


def _landed_by(settings: Settings, source: str, df: pd.DataFrame, cut: date) -> pd.DataFrame:
    """Rows of batches that had landed by the cutoff (a late file's rows, even dated before it, were unknown)."""
    if df.empty or "_batch_sha256" not in df.columns:
        return df
    recs = landing.records(settings, source)
    avail = {r["sha256"]: r.get("available_date") or "" for r in recs}
    ok = df["_batch_sha256"].map(avail).fillna("9999-12-31") <= cut.isoformat()
    return df[ok.to_numpy()]


def _silver(settings: Settings, source: str, upto: date, cut: date) -> pd.DataFrame:
    return _landed_by(settings, source, ingest.silver(settings, source, upto=upto), cut)


@dataclass
class TaxInputs:
    month: pd.Period
    cutoff: date
    register: pd.DataFrame  # latest register version per taxpayer, as of the cutoff
    returns: pd.DataFrame  # IGV returns filed before the cutoff (latest version per taxpayer and period)
    income: pd.DataFrame  # income returns filed before the cutoff
    einvoices: pd.DataFrame  # e-invoice aggregates landed by the cutoff, periods up to the month
    audits: pd.DataFrame  # audits closed before the cutoff
    imports: pd.DataFrame  # customs imports per importer and month, PEN: cif_pen, import_igv_pen
    offences: pd.DataFrame  # per importer: customs inspections and offences reported before the cutoff
    customs_risk: pd.DataFrame  # per importer: mean fraud probability of its items scored before the cutoff


def load(settings: Settings, month: str | pd.Period) -> TaxInputs:
    """Everything the run for ``month`` may know (see the module docstring)."""
    m = parse_month(month)
    cut = cutoff(m)
    last = cut - DAY
    reg = _silver(settings, "taxpayers", cut, cut)
    reg = _before(reg, "status_date", cut)
    if len(reg):
        reg = reg.sort_values(["taxpayer_id", "effective_date", "status_date"], kind="stable")
        reg = reg.drop_duplicates("taxpayer_id", keep="last").reset_index(drop=True)
    ret = _before(_silver(settings, "igv_returns", last, cut), "filing_date", cut)
    if len(ret):
        ret = ret.sort_values(["taxpayer_id", "period", "filing_date"], kind="stable")
        ret = ret.drop_duplicates(["taxpayer_id", "period"], keep="last").reset_index(drop=True)
    inc = _before(_silver(settings, "income_returns", last, cut), "filing_date", cut)
    if len(inc):
        inc = inc.sort_values(["taxpayer_id", "fiscal_year", "filing_date"], kind="stable")
        inc = inc.drop_duplicates(["taxpayer_id", "fiscal_year"], keep="last").reset_index(drop=True)
    inv = _silver(settings, "einvoices", cut, cut)
    if len(inv):
        inv = inv[inv.period.astype(str) <= str(m)].reset_index(drop=True)
    aud = _before(_silver(settings, "tax_audits", last, cut), "closed_date", cut).reset_index(drop=True)
    imports, offences = _customs(settings, last, cut)
    risk = read_partitioned(settings.scored_dir, "declaration_date", upto=last,
                            columns=["importer_id", "fraud_probability"],
                            empty=["importer_id", "fraud_probability"])
    risk = (risk.groupby("importer_id", as_index=False).agg(customs_risk=("fraud_probability", "mean"))
            if len(risk) else pd.DataFrame({"importer_id": pd.Series(dtype=str),
                                            "customs_risk": pd.Series(dtype=float)}))
    return TaxInputs(m, cut, reg, ret, inc, inv, aud, imports, offences, risk)


def _customs(settings: Settings, last: date, cut: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Imports per importer and month in PEN (CIF and the IGV + IPM paid at import on CIF plus duty, at the
    month's median USD rate), and each importer's inspections and offences reported before the cutoff."""
    cols = ["declaration_id", "item_no", "declaration_date", "importer_id", "cif_usd", "duty_rate"]
    cus = ingest.silver(settings, "customs", upto=last)
    empty_imp = pd.DataFrame({"importer_id": pd.Series(dtype=str), "period": pd.Series(dtype=str),
                              "cif_pen": pd.Series(dtype=float), "import_igv_pen": pd.Series(dtype=float)})
    empty_off = pd.DataFrame({"importer_id": pd.Series(dtype=str), "customs_inspections": pd.Series(dtype=float),
                              "customs_offences": pd.Series(dtype=float)})
    if cus.empty:
        return empty_imp, empty_off
    cus = cus[cols]
    fx = ingest.silver(settings, "exchange_rates", upto=last)
    per = pd.to_datetime(cus.declaration_date).dt.to_period("M").astype(str)
    rate = pd.Series(dtype=float)
    if len(fx):
        usd = fx[fx.currency == "USD"]
        rate = usd.groupby(pd.to_datetime(usd.rate_date).dt.to_period("M").astype(str)).pen_per_unit.median()
    # A month without a known rate takes the latest known one before it (never a later month's).
    known = rate.sort_index()
    by_month = {p: (known[known.index <= p].iloc[-1] if (known.index <= p).any() else known.iloc[0])
                if len(known) else 1.0 for p in per.unique()}
    pen = per.map(by_month).astype(float)
    t = settings.tax
    cif = cus.cif_usd.astype(float) * pen
    igv = cif * (1 + cus.duty_rate.astype(float)) * (t.igv_rate + t.ipm_rate)
    imp = pd.DataFrame({"importer_id": cus.importer_id.astype(str), "period": per, "cif_pen": cif,
                        "import_igv_pen": igv}).groupby(["importer_id", "period"], as_index=False).sum()
    # Customs tables come with bulk history extracts landed after the rows they hold: their rows' own dates
    # (declared, reported) say when they were known, so no landing filter here.
    enf = _before(ingest.silver(settings, "enforcement", upto=last), "reported_date", cut)
    if enf.empty:
        return imp, empty_off
    enf = enf.sort_values(["reported_date", "record_id"]).drop_duplicates(["declaration_id", "item_no"], keep="last")
    j = enf.merge(cus[["declaration_id", "item_no", "importer_id"]], on=["declaration_id", "item_no"], how="inner")
    # Counted per declaration: an offence on any of its items is one offence.
    j = j.assign(fraud=(j.result == "FRAUD").astype(float)).groupby(["importer_id", "declaration_id"],
                                                                    as_index=False).fraud.max()
    off = j.groupby("importer_id", as_index=False).agg(customs_inspections=("fraud", "size"),
                                                       customs_offences=("fraud", "sum"))
    return imp, off
