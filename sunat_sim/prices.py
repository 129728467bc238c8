"""Market prices (trend and season per HS code) and the published reference prices that estimate them.

An honest item's price is the market price of its goods and origin on its day times the importer's and
the supplier's price level, a heavy-tailed individual spread and, now and then, a legitimately low lot.
Reference prices are what an administration publishes: estimates with a lasting error per HS x origin
plus a fresh error per issue, issued every few months with a ``valid_from`` date, and missing for some
pairs (and for a new HS line until the first issue after it is created).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from sunat_sim.catalogue import ORIGINS
from sunat_sim.config import S_PRICES, WorldConfig, rng

REFERENCE_COLUMNS = ["hs_code", "origin_country", "ref_unit_price_usd_kg", "valid_from"]


def _month(cfg: WorldConfig, d) -> np.ndarray:
    """Months since the world's first month (vectorised over datetime64 or date)."""
    m = np.asarray(pd.to_datetime(d).to_numpy().astype("datetime64[M]").astype(int))
    return m - (cfg.start_date.year - 1970) * 12 - (cfg.start_date.month - 1)


class PriceModel:
    def __init__(self, cfg: WorldConfig, hs: pd.DataFrame):
        k = cfg.k["prices"]
        r = rng(cfg.seed, S_PRICES)
        self.cfg, self.hs = cfg, hs.reset_index(drop=True)
        self.hs_index = {c: i for i, c in enumerate(self.hs.hs_code)}
        self.origins = list(ORIGINS)
        self.origin_index = {o: i for i, o in enumerate(self.origins)}
        months = cfg.total_days // 28 + 3
        self.trend = np.cumsum(r.normal(0, k["trend_sigma_month"], (len(self.hs), months)), axis=1)
        seasonal = self.hs.hs_code.str[:2].isin(k["seasonal_chapters"]).to_numpy()
        self.season_amp = np.where(seasonal, k["season_amplitude"], 0.0)
        self.season_peak = r.integers(0, 12, len(self.hs))
        ref = cfg.k["reference"]
        self.bias = r.normal(0, ref["bias_sigma"], (len(self.hs), len(self.origins)))
        self.missing = r.random((len(self.hs), len(self.origins))) < ref["missing_share"]

    def log_market(self, hs_code, origin, day) -> np.ndarray:
        """log USD/kg of the goods' market price on its day (before any individual spread)."""
        hi = np.array([self.hs_index[c] for c in hs_code])
        mult = np.array([ORIGINS[o][0] for o in origin])
        d = pd.to_datetime(pd.Series(day))
        m = np.clip(_month(self.cfg, d), 0, self.trend.shape[1] - 1)
        moy = d.dt.month.to_numpy()
        season = self.season_amp[hi] * np.cos(2 * np.pi * (moy - 1 - self.season_peak[hi]) / 12)
        return np.log(self.hs.base_price.to_numpy()[hi] * mult) + self.trend[hi, m] + season

    def individual(self, r: np.random.Generator, n: int) -> np.ndarray:
        """An honest item's log deviation from the market: heavy tails and legitimately low lots."""
        k = self.cfg.k["prices"]
        df = k["tail_df"]
        t = r.standard_t(df, n) * np.sqrt((df - 2) / df) if df > 2 else r.standard_t(df, n)
        dev = k["sigma"] * np.clip(t, -6, 6)
        low = r.random(n) < k["low_lot_share"]
        lo, hi = k["low_lot_range"]
        return dev + np.where(low, np.log(r.uniform(lo, hi, n)), 0.0)

    def publication_dates(self) -> list[date]:
        """Issue dates: the world's start, then every few months (first of the month), up to the last live day."""
        every = int(self.cfg.k["reference"]["issue_every_months"])
        last = self.cfg.live_dates[-1] if self.cfg.live_days else self.cfg.last_history_date
        out, d = [], self.cfg.start_date
        while d <= last:
            out.append(d)
            m = d.month - 1 + every
            d = date(d.year + m // 12, m % 12 + 1, 1)
        return out

    def publication(self, issued: date, created: dict[str, int]) -> pd.DataFrame:
        """One issue: an estimate per HS x origin pair (some pairs never published; a line only once it exists)."""
        r = np.random.default_rng([self.cfg.seed, S_PRICES, self.cfg.index(issued) + 1])
        m = min(max(int(_month(self.cfg, [issued])[0]), 0), self.trend.shape[1] - 1)
        noise = r.normal(0, self.cfg.k["reference"]["noise_sigma"], self.bias.shape)
        rows = []
        for i, h in enumerate(self.hs.itertuples()):
            if created.get(h.hs_code, 0) > self.cfg.index(issued):
                continue
            for j, o in enumerate(self.origins):
                if self.missing[i, j]:
                    continue
                est = h.base_price * ORIGINS[o][0] * np.exp(self.trend[i, m] + self.bias[i, j] + noise[i, j])
                rows.append((h.hs_code, o, round(float(est), 4), issued))
        return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def in_force(publications: pd.DataFrame, hs_code, origin, day) -> np.ndarray:
    """The reference price in force on each item's day (the latest issue with valid_from <= day); NaN if none."""
    out = np.full(len(hs_code), np.nan)
    if publications.empty or not len(out):
        return out
    pub = publications.assign(valid_from=pd.to_datetime(publications.valid_from)).sort_values("valid_from")
    items = pd.DataFrame({"hs_code": np.asarray(hs_code), "origin_country": np.asarray(origin),
                          "d": pd.to_datetime(pd.Series(day)).to_numpy(), "pos": np.arange(len(out))})
    items = items.sort_values("d")
    m = pd.merge_asof(items, pub, left_on="d", right_on="valid_from", by=["hs_code", "origin_country"])
    out[m.pos.to_numpy()] = m.ref_unit_price_usd_kg.to_numpy(dtype=float)
    return out
