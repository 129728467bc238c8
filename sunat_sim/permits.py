"""Permits for restricted goods and the permit register an administration keeps.

Every permit number has the same format (``<issuer>-<year>-<6 digits>``), so a declaration alone cannot
tell a forged one: only the register can. Legitimate importers request a permit shortly before the first
shipment it covers; it enters the register a few days after it is issued (so a genuine, brand-new permit
may not be in the register yet), some numbers are mistyped, and some restricted codes cover goods that
need no permit. Offenders quote none, a fabricated number near real ones, or another importer's permit.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from sunat_sim.catalogue import PERMIT_ISSUERS
from sunat_sim.config import WorldConfig

REGISTER_COLUMNS = ["permit_no", "issuer", "importer_id", "hs_code", "valid_from", "valid_to", "status",
                    "registered_date", "status_date"]


class PermitBook:
    def __init__(self, cfg: WorldConfig, r: np.random.Generator):
        self.cfg, self.k = cfg, cfg.k["permits"]
        self.rows: list[dict] = []
        self.current: dict[tuple[str, str], int] = {}  # (importer, hs) -> row of its latest permit
        self.by_no: dict[str, int] = {}
        self.seq = {i: int(r.integers(100_000, 200_000)) for i in sorted(PERMIT_ISSUERS.values())}

    def _number(self, issuer: str, day: int, r: np.random.Generator) -> str:
        self.seq[issuer] += int(r.integers(1, 30))
        return f"{issuer}-{self.cfg.day(day).year}-{self.seq[issuer] % 1_000_000:06d}"

    def legit(self, importer: str, hs: str, flag: str, day: int, r: np.random.Generator) -> tuple[str, str]:
        """The permit number a legitimate importer quotes, and what it is (valid, clerical, exempt)."""
        if r.random() < self.k["exempt_share"]:
            return "", "exempt"
        i = self.current.get((importer, hs))
        if i is None or self.rows[i]["valid_to"] < day or self.rows[i]["status"] != "ACTIVE":
            lo, hi = self.k["lead_days"]
            issued = day - int(r.integers(lo, hi + 1))
            lag_lo, lag_hi = self.k["register_lag_days"]
            issuer = PERMIT_ISSUERS[flag]
            row = {"permit_no": self._number(issuer, issued, r), "issuer": issuer, "importer_id": importer,
                   "hs_code": hs, "valid_from": issued, "valid_to": issued + int(self.k["validity_days"]),
                   "status": "ACTIVE", "registered_date": issued + int(r.integers(lag_lo, lag_hi + 1)),
                   "status_date": None}
            row["status_date"] = row["registered_date"]
            i = self.current[(importer, hs)] = len(self.rows)
            self.by_no[row["permit_no"]] = i
            self.rows.append(row)
        no = self.rows[i]["permit_no"]
        if r.random() < self.k["clerical_error_share"]:
            return self._mistype(no, r), "clerical"
        return no, "valid"

    def _mistype(self, no: str, r: np.random.Generator) -> str:
        for _ in range(20):
            digits = list(no[-6:])
            j = int(r.integers(0, 6))
            digits[j] = str((int(digits[j]) + int(r.integers(1, 10))) % 10)
            cand = no[:-6] + "".join(digits)
            if cand not in self.by_no:
                return cand
        return no[:-6] + "000000"

    def forged(self, importer: str, hs: str, flag: str, day: int, r: np.random.Generator) -> tuple[str, str]:
        """What an offender quotes for prohibited goods: nothing, a fabricated number, or a borrowed permit."""
        kinds = self.cfg.k["fraud"]["permit_forgery"]
        how = str(r.choice(list(kinds), p=np.array(list(kinds.values())) / sum(kinds.values())))
        if how == "missing":
            return "", "missing"
        if how == "borrowed":
            others = [row["permit_no"] for row in self.rows if row["hs_code"] == hs and row["importer_id"] != importer
                      and row["valid_from"] <= day <= row["valid_to"]]
            if others:
                return str(others[int(r.integers(len(others)))]), "borrowed"
        issuer = PERMIT_ISSUERS[flag]
        near = self.seq[issuer] - int(r.integers(1, 400))  # close to the numbers being issued now
        cand = f"{issuer}-{self.cfg.day(day).year}-{near % 1_000_000:06d}"
        return (cand if cand not in self.by_no else self._mistype(cand, r)), "fabricated"

    def revoke(self, importer: str, day: int) -> None:
        """An agency revokes an importer's permits after its prohibited goods are found."""
        for (imp, _), i in self.current.items():
            if imp == importer and self.rows[i]["status"] == "ACTIVE" and self.rows[i]["valid_to"] >= day:
                self.rows[i]["status"] = "REVOKED"
                self.rows[i]["status_date"] = max(day, self.rows[i]["registered_date"])

    def register(self) -> pd.DataFrame:
        """Every permit with its dates as day indexes (status as last set)."""
        return pd.DataFrame(self.rows, columns=REGISTER_COLUMNS)

    def known_valid(self, permit_no, importer, hs, day: int) -> np.ndarray:
        """Whether each quoted permit is, in the register known at the start of ``day``, the importer's active
        permit for the goods and in force (what an administration can check)."""
        out = np.zeros(len(permit_no), dtype=bool)
        for j, (no, imp, h) in enumerate(zip(permit_no, importer, hs, strict=True)):
            i = self.by_no.get(no)
            if i is None:
                continue
            row = self.rows[i]
            revoked = row["status"] == "REVOKED" and row["status_date"] < day
            out[j] = (row["registered_date"] < day and row["importer_id"] == imp and row["hs_code"] == h
                      and row["valid_from"] <= day <= row["valid_to"] and not revoked)
        return out


def register_extract(reg: pd.DataFrame, cfg: WorldConfig, since: int | None, upto: int) -> pd.DataFrame:
    """The register extract landed at day ``upto``: permits registered or changed in (since, upto], each in its
    state as of ``upto`` (a bulk history extract when ``since`` is None)."""
    changed = reg.status_date.where(reg.status_date <= upto, reg.registered_date)
    state_now = reg.assign(status=np.where(reg.status_date <= upto, reg.status, "ACTIVE"), status_date=changed)
    lo = -10**9 if since is None else since
    new = (state_now.registered_date <= upto) & ((state_now.registered_date > lo) | (state_now.status_date > lo))
    out = state_now[new].copy()
    for c in ("valid_from", "valid_to", "registered_date", "status_date"):
        out[c] = [cfg.day(int(x)) for x in out[c]]
    return out.sort_values("permit_no")[REGISTER_COLUMNS].reset_index(drop=True)


def extract_dates(cfg: WorldConfig) -> list[date]:
    every = int(cfg.k["permits"]["register_every_days"])
    return [d for j, d in enumerate(cfg.live_dates) if j % every == 0]
