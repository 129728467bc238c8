"""Landing-zone contract: the sources, their columns and types, business keys and partitions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

NUMERIC = "float"
INTEGER = "int"
TEXT = "str"
DATE = "date"


@dataclass(frozen=True)
class SourceSpec:
    name: str
    columns: dict[str, str]  # column -> type
    key: tuple[str, ...]  # business key: duplicates on it are collapsed in silver
    partition_by: str  # date column used for silver partitions

    @property
    def silver_key(self) -> str:
        return self.partition_by


SOURCES: dict[str, SourceSpec] = {
    "customs": SourceSpec(
        "customs",
        {
            "declaration_id": TEXT, "item_no": INTEGER, "declaration_date": DATE, "customs_office": TEXT,
            "importer_id": TEXT, "declarant_id": TEXT, "supplier_id": TEXT, "supplier_country": TEXT,
            "transport_mode": TEXT, "hs_code": TEXT, "origin_country": TEXT, "quantity": NUMERIC,
            "net_weight_kg": NUMERIC, "invoice_currency": TEXT, "fob_invoice": NUMERIC, "fob_usd": NUMERIC,
            "freight_usd": NUMERIC, "insurance_usd": NUMERIC, "cif_usd": NUMERIC, "duty_rate": NUMERIC,
            "permit_no": TEXT,
        },
        ("declaration_id", "item_no"),
        "declaration_date",
    ),
    "enforcement": SourceSpec(
        "enforcement",
        {
            "record_id": TEXT, "declaration_id": TEXT, "item_no": INTEGER, "inspection_date": DATE,
            "channel": TEXT, "result": TEXT, "offence_code": TEXT, "revenue_recovered_usd": NUMERIC,
            "penalty_usd": NUMERIC, "reported_date": DATE, "officer_id": TEXT,
        },
        ("record_id",),
        "reported_date",
    ),
    "tax": SourceSpec(
        "tax",
        {
            "taxpayer_id": TEXT, "period": TEXT, "filing_date": DATE, "sales_pen": NUMERIC,
            "purchases_pen": NUMERIC, "igv_debit_pen": NUMERIC, "igv_credit_pen": NUMERIC,
        },
        ("taxpayer_id", "period"),
        "filing_date",
    ),
    "reference_prices": SourceSpec(
        "reference_prices",
        {"hs_code": TEXT, "origin_country": TEXT, "ref_unit_price_usd_kg": NUMERIC},
        ("hs_code", "origin_country"),
        "effective_date",
    ),
    "exchange_rates": SourceSpec(
        "exchange_rates",
        {"rate_date": DATE, "currency": TEXT, "pen_per_unit": NUMERIC},
        ("rate_date", "currency"),
        "rate_date",
    ),
}

# <source>__<YYYY-MM-DD>[__<tag>].csv ; the date is when the extract becomes usable.
_NAME = re.compile(r"^(?P<source>[a-z_]+)__(?P<date>\d{4}-\d{2}-\d{2})(?:__(?P<tag>[A-Za-z0-9_-]+))?\.csv$")


@dataclass(frozen=True)
class LandedFile:
    path: Path
    source: str
    available: date
    tag: str


def parse_landing_name(path: Path) -> LandedFile | None:
    m = _NAME.match(path.name)
    if not m or m["source"] not in SOURCES:
        return None
    try:
        d = date.fromisoformat(m["date"])
    except ValueError:
        return None
    return LandedFile(path, m["source"], d, m["tag"] or "")
