"""Column mappings from a foreign declaration extract to the canonical customs schema.

A mapping (``mappings/<name>.yaml``) says, for each canonical customs column (``sources.SOURCES['customs']``),
which column of the foreign file feeds it and how to clean it; which further categorical attributes the
file carries (``extra``, kept as ``x_<name>``); which entity profiles and peer groups ``sunat-pipeline evaluate``
computes for it beyond the daily pipeline's (``profile_keys``, ``pairs``, ``profile_smoothing``, ``peer_groups``;
see ``sunat_pipeline/features/``) and which catalog features it leaves out (``exclude_features``); and where the
label is. Example::

    name: kcs
    columns:
      declaration_id: Declaration ID                  # a plain source column name
      hs_code: {source: HS6 Code, pad: 6}             # left-pad with zeros to 6 characters
      duty_rate: {source: Tax Rate, scale: 0.01}      # percent -> fraction
      supplier_id: {source: Seller ID, optional: true}  # the file may lack the column: filled with nulls
      invoice_currency: {constant: KRW}
    extra:
      courier_id: {source: Courier ID, optional: true}
      departure_country: {source: Country of Departure, upper: true}
    profile_keys: [transport_mode]                    # canonical columns profiled too (every extra is)
    pairs: [[hs6, "*"], [origin_country, departure_country]]  # profile crosses; "*": with every other key
    profile_smoothing: 5                              # pseudo-inspections of the profile rates (default 20)
    peer_groups: [[hs6, origin_country], [importer_id]]  # value, weight, duty rate against the group's past
    exclude_features: [month]                         # catalog features this extract cannot support
    label: {source: Fraud, positive: ["1"]}

Canonical columns the mapping does not name are absent from the extract and come out as nulls (except
``item_no``: the position of the row within its declaration). ``declaration_id``, ``declaration_date`` and
``hs_code`` must be mapped. Empty strings are nulls.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sunat_pipeline.ingest.sources import DATE, INTEGER, NUMERIC, SOURCES

REQUIRED = ("declaration_id", "declaration_date", "hs_code")
LABEL = "label"
_SPEC_KEYS = {"source", "pad", "scale", "constant", "optional", "format", "upper"}
ANY = "*"  # in a pair: every other profile key


class MappingError(ValueError):
    """The mapping file is malformed, or an extract does not fit it."""


@dataclass(frozen=True)
class ColumnSpec:
    source: str | None = None
    pad: int | None = None
    scale: float | None = None
    constant: str | float | None = None
    optional: bool = False
    format: str | None = None
    upper: bool = False


@dataclass(frozen=True)
class LabelSpec:
    source: str
    positive: tuple[str, ...] = ("1",)


@dataclass(frozen=True)
class Mapping:
    name: str
    columns: dict[str, ColumnSpec]
    extra: dict[str, ColumnSpec] = field(default_factory=dict)
    pairs: tuple[tuple[str, str], ...] = ()
    label: LabelSpec | None = None
    description: str = ""
    profile_keys: tuple[str, ...] = ()
    profile_smoothing: float | None = None
    peer_groups: tuple[tuple[str, ...], ...] = ()
    exclude_features: tuple[str, ...] = ()

    @property
    def extra_columns(self) -> list[str]:
        return [f"x_{k}" for k in self.extra]

    def column(self, name: str) -> str:
        """The extract's column of a mapping name: ``x_<name>`` for an extra, else the canonical name."""
        return f"x_{name}" if name in self.extra else name


def canonical_columns() -> dict[str, str]:
    """Canonical customs column -> type (the landing contract)."""
    return dict(SOURCES["customs"].columns)


def _spec(where: str, raw) -> ColumnSpec:
    if isinstance(raw, str):
        return ColumnSpec(source=raw)
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a source column name or a mapping, got {raw!r}")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_SPEC_KEYS)})")
    if ("source" in raw) == ("constant" in raw):
        raise MappingError(f"{where}: give exactly one of 'source' or 'constant'")
    return ColumnSpec(source=raw.get("source"), pad=raw.get("pad"),
                      scale=float(raw["scale"]) if raw.get("scale") is not None else None,
                      constant=raw.get("constant"), optional=bool(raw.get("optional", False)),
                      format=raw.get("format"), upper=bool(raw.get("upper", False)))


def parse_mapping(spec: dict, name: str = "mapping") -> Mapping:
    if not isinstance(spec, dict) or not isinstance(spec.get("columns"), dict):
        raise MappingError(f"{name}: a mapping needs a 'columns' section (canonical column: source column)")
    canon = canonical_columns()
    unknown = sorted(set(spec["columns"]) - set(canon))
    if unknown:
        raise MappingError(f"{name}: {unknown} are not canonical customs columns (known: {sorted(canon)})")
    missing = [c for c in REQUIRED if c not in spec["columns"]]
    if missing:
        raise MappingError(f"{name}: required canonical columns not mapped: {missing}")
    cols = {c: _spec(f"{name}: columns.{c}", v) for c, v in spec["columns"].items()}
    for c in REQUIRED:
        if cols[c].optional:
            raise MappingError(f"{name}: {c} is required and cannot be optional")
    extra = {k: _spec(f"{name}: extra.{k}", v) for k, v in (spec.get("extra") or {}).items()}
    clash = sorted(set(extra) & set(canon))
    if clash:
        raise MappingError(f"{name}: extra names {clash} clash with canonical columns")
    known = set(canon) | {"hs6", "hs4", "hs2"} | set(extra)
    pairs = []
    for p in spec.get("pairs") or []:
        if not (isinstance(p, list | tuple) and len(p) == 2 and p[0] in known and (p[1] in known or p[1] == ANY)):
            raise MappingError(f"{name}: pair {p!r} must name two canonical or extra columns (the second may be "
                               f"{ANY!r}: every other key)")
        pairs.append((str(p[0]), str(p[1])))
    keys = spec.get("profile_keys") or []
    groups = spec.get("peer_groups") or []
    if not (isinstance(keys, list) and all(k in known for k in keys)):
        raise MappingError(f"{name}: profile_keys must list canonical or extra columns, got {keys!r}")
    if not (isinstance(groups, list) and all(isinstance(g, list) and g and all(k in known for k in g)
                                             for g in groups)):
        raise MappingError(f"{name}: peer_groups must be lists of canonical or extra columns, got {groups!r}")
    exclude = spec.get("exclude_features") or []
    if not (isinstance(exclude, list) and all(isinstance(f, str) for f in exclude)):
        raise MappingError(f"{name}: exclude_features must list feature names, got {exclude!r}")
    smoothing = spec.get("profile_smoothing")
    if smoothing is not None and not (isinstance(smoothing, int | float) and smoothing > 0):
        raise MappingError(f"{name}: profile_smoothing must be a positive number, got {smoothing!r}")
    label = None
    if spec.get("label") is not None:
        lab = spec["label"]
        if not isinstance(lab, dict) or "source" not in lab:
            raise MappingError(f"{name}: label needs a 'source' column")
        label = LabelSpec(source=str(lab["source"]),
                          positive=tuple(str(v).strip() for v in lab.get("positive", ["1"])))
    return Mapping(name=str(spec.get("name", name)), columns=cols, extra=extra, pairs=tuple(pairs), label=label,
                   description=str(spec.get("description", "")), profile_keys=tuple(map(str, keys)),
                   profile_smoothing=None if smoothing is None else float(smoothing),
                   peer_groups=tuple(tuple(map(str, g)) for g in groups), exclude_features=tuple(exclude))


def load_mapping(path: str | Path) -> Mapping:
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise MappingError(f"{path}: not valid YAML: {e}") from e
    return parse_mapping(spec, name=path.stem)


def _column(raw: pd.DataFrame, where: str, spec: ColumnSpec, typ: str, n: int) -> pd.Series:
    if spec.constant is not None:
        s = pd.Series([spec.constant] * n, index=raw.index, dtype=object)
    elif spec.source not in raw.columns:
        if not spec.optional:
            raise MappingError(f"{where}: source column {spec.source!r} is not in the file "
                               f"(columns: {list(raw.columns)}); mark it 'optional: true' if it may be absent")
        s = pd.Series([None] * n, index=raw.index, dtype=object)
    else:
        s = raw[spec.source]
    s = s.astype(object).where(s.notna(), None)
    s = s.map(lambda v: None if v is None or str(v).strip() == "" else str(v).strip())
    if typ == DATE:
        out = pd.to_datetime(s, format=spec.format, errors="coerce")
        return out.dt.date.astype(object).where(out.notna(), None)
    if typ in (NUMERIC, INTEGER):
        out = pd.to_numeric(s, errors="coerce").astype("float64")
        if spec.scale is not None:
            out = out * spec.scale
        return out
    if spec.pad:
        s = s.map(lambda v: v if v is None else (v[:-2] if v.endswith(".0") else v).zfill(int(spec.pad)))
    if spec.upper:
        s = s.map(lambda v: v if v is None else v.upper())
    return s


def apply_mapping(raw: pd.DataFrame, mapping: Mapping, require_label: bool = False) -> pd.DataFrame:
    """Canonical customs columns (+ ``x_<extra>`` and ``label`` 0/1) from a foreign extract read as text."""
    raw = raw.reset_index(drop=True)
    n = len(raw)
    out = pd.DataFrame(index=raw.index)
    for col, typ in canonical_columns().items():
        spec = mapping.columns.get(col)
        if spec is not None:
            out[col] = _column(raw, f"{mapping.name}: {col}", spec, typ, n)
        elif typ in (NUMERIC, INTEGER):
            out[col] = np.nan
        else:
            out[col] = pd.Series([None] * n, index=raw.index, dtype=object)
    for c in REQUIRED:
        bad = out[c].isna()
        if bad.any():
            first = raw.loc[bad].head(3).to_dict("records")
            raise MappingError(f"{mapping.name}: {int(bad.sum())} rows without a usable {c} (e.g. {first})")
    if "item_no" not in mapping.columns or out.item_no.isna().all():
        out["item_no"] = out.groupby("declaration_id", sort=False).cumcount().add(1).astype("float64")
    for k, spec in mapping.extra.items():
        out[f"x_{k}"] = _column(raw, f"{mapping.name}: extra.{k}", spec, "str", n)
    if mapping.label is not None and (mapping.label.source in raw.columns or require_label):
        if mapping.label.source not in raw.columns:
            raise MappingError(f"{mapping.name}: label column {mapping.label.source!r} is not in the file")
        lab = raw[mapping.label.source].astype(str).str.strip()
        out[LABEL] = lab.isin(mapping.label.positive).astype(int)
    elif require_label:
        raise MappingError(f"{mapping.name}: the mapping has no label section")
    return out


def read_extract(path: str | Path, mapping: Mapping, require_label: bool = False) -> pd.DataFrame:
    """Read a CSV extract as text (no type guessing: codes keep their characters) and map it."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    return apply_mapping(raw, mapping, require_label=require_label)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
