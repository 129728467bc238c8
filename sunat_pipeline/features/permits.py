"""Whether a declared permit is valid in the permit register as known before the declaration day.

The register (silver ``permits``) keeps every landed version of a permit: a later extract's version (a
revocation) lands in the partition of its file's date, and the earlier version stays in its own partition.
For an item lodged on day D the permit's version in force is the latest one whose status was set before D
(by ``status_date``, then the later file); when every version was set on or after D (a bulk extract written
after a revocation), its earliest one, whose later status D could not know yet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sunat_pipeline.features.arrays import to_days

REVOKED = "REVOKED"


def _text(s: pd.Series) -> np.ndarray:
    return s.astype("string").fillna("").str.strip().to_numpy(dtype=object)


def permit_valid(items: pd.DataFrame, permits: pd.DataFrame | None) -> np.ndarray:
    """1.0 when the item's quoted permit is, in the register as known before its day D, registered before D,
    the importer's, for the item's HS10 code, in force on D and not revoked before D; 0.0 when a permit is
    quoted but is not; NaN when no permit is quoted or no register is loaded."""
    out = np.full(len(items), np.nan)
    if permits is None or not len(permits) or not len(items):
        return out
    quoted = _text(items.permit_no)
    rows = np.flatnonzero(quoted != "")
    if not len(rows):
        return out
    out[rows] = 0.0
    it = pd.DataFrame({"row": rows, "permit_no": quoted[rows], "day": to_days(items.declaration_date)[rows],
                       "importer_id": _text(items.importer_id)[rows], "hs_code": _text(items.hs_code)[rows]})
    reg = pd.DataFrame({"permit_no": _text(permits.permit_no), "p_importer": _text(permits.importer_id),
                        "p_hs": _text(permits.hs_code), "status": _text(permits.status),
                        "valid_from": to_days(permits.valid_from), "valid_to": to_days(permits.valid_to),
                        "registered": to_days(permits.registered_date), "set": to_days(permits.status_date),
                        # the later file wins a tie (its partition date; absent outside silver: input order)
                        "file": to_days(permits.effective_date) if "effective_date" in permits.columns
                        else np.arange(len(permits))})
    m = it.merge(reg, on="permit_no", how="inner")
    if not len(m):
        return out
    before = m.set.to_numpy() < m.day.to_numpy()
    # Versions set before D rank above the rest, latest last; among the rest the earliest is last.
    m = m.assign(before=before, order=np.where(before, m.set, -m.set))
    v = m.sort_values(["row", "before", "order", "file"], kind="stable").drop_duplicates("row", keep="last")
    d = v.day.to_numpy()
    ok = ((v.registered.to_numpy() < d) & (v.p_importer.to_numpy() == v.importer_id.to_numpy())
          & (v.p_hs.to_numpy() == v.hs_code.to_numpy()) & (v.valid_from.to_numpy() <= d)
          & (d <= v.valid_to.to_numpy()) & ~((v.status.to_numpy() == REVOKED) & v.before.to_numpy()))
    out[v.row.to_numpy()] = ok.astype(float)
    return out
