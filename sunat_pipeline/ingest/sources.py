"""Landing-zone contract: the sources, their columns and types, business keys and partitions, file names,
formats, encodings and when a landed file is complete (see docs/landing.md for the producer's view)."""

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
    # Date columns that may not be later than the file's available date (critical) nor before
    # MIN_PLAUSIBLE_DATE; rows older than ``window_days`` before it are flagged (warning) unless the file is a
    # bulk extract (tag ``history``); the newest row older than ``freshness_days`` flags a stale extract.
    date_columns: tuple[str, ...] = ()
    window_days: int = 31
    freshness_days: int = 7

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
        date_columns=("declaration_date",),
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
        date_columns=("inspection_date", "reported_date"),
        window_days=120,
        freshness_days=31,
    ),
    "tax": SourceSpec(
        "tax",
        {
            "taxpayer_id": TEXT, "period": TEXT, "filing_date": DATE, "sales_pen": NUMERIC,
            "purchases_pen": NUMERIC, "igv_debit_pen": NUMERIC, "igv_credit_pen": NUMERIC,
        },
        ("taxpayer_id", "period"),
        "filing_date",
        date_columns=("filing_date",),
        window_days=400,
        freshness_days=62,
    ),
    "reference_prices": SourceSpec(
        "reference_prices",
        {"hs_code": TEXT, "origin_country": TEXT, "ref_unit_price_usd_kg": NUMERIC},
        ("hs_code", "origin_country"),
        "effective_date",
    ),
    # The permit register: each extract holds the permits registered or changed since the last one, in their
    # state as of the file's date. A later file's version supersedes (a revocation) but lands in its own
    # partition (the file's date), so silver keeps both: features take the latest version set before the day.
    "permits": SourceSpec(
        "permits",
        {
            "permit_no": TEXT, "issuer": TEXT, "importer_id": TEXT, "hs_code": TEXT, "valid_from": DATE,
            "valid_to": DATE, "status": TEXT, "registered_date": DATE, "status_date": DATE,
        },
        ("permit_no",),
        "effective_date",
        date_columns=("registered_date", "status_date"),
        window_days=400,
        freshness_days=62,
    ),
    "exchange_rates": SourceSpec(
        "exchange_rates",
        {"rate_date": DATE, "currency": TEXT, "pen_per_unit": NUMERIC},
        ("rate_date", "currency"),
        "rate_date",
        date_columns=("rate_date",),
        window_days=31,
        freshness_days=7,
    ),
    # The tax side (docs/tax.md): monthly extracts, each landed on the first day of the month after its rows
    # became known. The register is versioned like the permit register: a file holds the taxpayers registered
    # or changed since the last one, in their state as of their status date.
    "taxpayers": SourceSpec(
        "taxpayers",
        {
            "taxpayer_id": TEXT, "sector": TEXT, "tax_regime": TEXT, "region": TEXT, "tax_office": TEXT,
            "status": TEXT, "domicile_condition": TEXT, "registered_date": DATE, "status_date": DATE,
        },
        ("taxpayer_id",),
        "effective_date",
        date_columns=("registered_date", "status_date"),
        window_days=62,
        freshness_days=400,  # a quiet month changes nothing: an old newest row is no sign of a stale extract
    ),
    # Monthly IGV (VAT) returns of every taxpayer; supersedes ``tax`` (the importers' view the customs
    # features read, kept as it is).
    "igv_returns": SourceSpec(
        "igv_returns",
        {
            "taxpayer_id": TEXT, "period": TEXT, "filing_date": DATE, "sales_pen": NUMERIC,
            "purchases_pen": NUMERIC, "igv_debit_pen": NUMERIC, "igv_credit_pen": NUMERIC,
            "credit_carried_forward_pen": NUMERIC, "igv_payable_pen": NUMERIC,
        },
        ("taxpayer_id", "period"),
        "filing_date",
        date_columns=("filing_date",),
        window_days=62,
        freshness_days=62,
    ),
    "income_returns": SourceSpec(
        "income_returns",
        {
            "taxpayer_id": TEXT, "fiscal_year": INTEGER, "filing_date": DATE, "revenue_pen": NUMERIC,
            "cost_of_sales_pen": NUMERIC, "deductions_pen": NUMERIC, "taxable_profit_pen": NUMERIC,
            "income_tax_pen": NUMERIC,
        },
        ("taxpayer_id", "fiscal_year"),
        "filing_date",
        date_columns=("filing_date",),
        window_days=62,
        freshness_days=62,
    ),
    # Electronic invoices as the sellers reported them, aggregated per seller, buyer and month of issue.
    "einvoices": SourceSpec(
        "einvoices",
        {
            "seller_id": TEXT, "buyer_id": TEXT, "period": TEXT, "invoices": INTEGER,
            "taxable_amount_pen": NUMERIC, "igv_pen": NUMERIC,
        },
        ("seller_id", "buyer_id", "period"),
        "effective_date",
    ),
    # Outcomes of tax audits, reported when the audit closes (months after it opened).
    "tax_audits": SourceSpec(
        "tax_audits",
        {
            "audit_id": TEXT, "taxpayer_id": TEXT, "program": TEXT, "period_from": TEXT, "period_to": TEXT,
            "opened_date": DATE, "closed_date": DATE, "result": TEXT, "assessed_tax_pen": NUMERIC,
            "penalty_pen": NUMERIC,
        },
        ("audit_id",),
        "closed_date",
        date_columns=("opened_date", "closed_date"),
        window_days=400,
        freshness_days=400,
    ),
}
# The daily DAG's sources; the tax side's monthly extracts are read by the monthly tax run.
DAILY_SOURCES = ("customs", "tax", "enforcement", "reference_prices", "exchange_rates", "permits")
TAX_SOURCES = ("taxpayers", "igv_returns", "income_returns", "einvoices", "tax_audits")

MIN_PLAUSIBLE_DATE = date(2000, 1, 1)  # earlier dates are impossible for these extracts (critical)

# <source>__<YYYY-MM-DD>[__<tag>].csv|.parquet ; the date is when the extract becomes usable.
_NAME = re.compile(r"^(?P<source>[a-z_]+)__(?P<date>\d{4}-\d{2}-\d{2})(?:__(?P<tag>[A-Za-z0-9_-]+))?"
                   r"\.(?P<ext>csv|parquet)$")
FORMATS = {"csv": "csv", "parquet": "parquet"}
# Tag tokens that declare a text encoding (CSV only; Parquet text is always UTF-8). Default: UTF-8.
ENCODING_TAGS = {"latin1": "latin-1", "latin-1": "latin-1", "iso-8859-1": "latin-1", "cp1252": "cp1252",
                 "utf8": "utf-8", "utf-8": "utf-8"}
# Completeness. A producer either lands a file by renaming it atomically into place from a name the pipeline
# ignores (hidden, or one of these suffixes), or writes it in place and then drops ``<file>.done`` beside it.
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".filepart", ".crdownload", ".inprogress", ".copying",
                        ".uploading")
MARKER_SUFFIX = ".done"
# Which sources must drop a marker is a setting: ``settings.ingest.done_markers``.
BADNAME = "__badname__"
# CSV: the longest line accepted (a customs line is about 250 bytes). Checked while streaming the file, so a
# runaway line (an unclosed quote, a binary blob) is named with its line number; read blocks are never
# smaller than this, so every allowed line fits in one block whatever the block size.
MAX_LINE_BYTES = 64 << 10


@dataclass(frozen=True)
class LandedFile:
    path: Path
    source: str
    available: date
    tag: str

    @property
    def format(self) -> str:
        return "parquet" if self.path.name.endswith(".parquet") else "csv"

    @property
    def encoding(self) -> str:
        """The declared text encoding (a tag token such as ``latin1``); UTF-8 when none is declared."""
        for token in self.tag.lower().split("__"):
            if token in ENCODING_TAGS:
                return ENCODING_TAGS[token]
        return "utf-8"

    @property
    def is_bulk(self) -> bool:
        """A bulk (history) extract may span any past dates."""
        return "history" in self.tag.lower().split("__")


def parse_landing_name(path: Path) -> LandedFile | None:
    m = _NAME.match(path.name)
    if not m or m["source"] not in SOURCES:
        return None
    try:
        d = date.fromisoformat(m["date"])
    except ValueError:
        return None
    if d < MIN_PLAUSIBLE_DATE:  # 0001-01-01 is no day an extract became usable
        return None
    return LandedFile(path, m["source"], d, m["tag"] or "")


def name_problem(name: str, folder_source: str | None = None) -> str | None:
    """Why ``name`` breaks the naming contract, in plain words; None when it follows it."""
    if any(c in name for c in "/\\") or ".." in name or any(ord(c) < 32 for c in name):
        return (f"File name {name!r} contains a path separator, '..' or a control character: it is never "
                "read as data (it could point outside the landing zone).")
    m = _NAME.match(name)
    hint = ""
    if m is None:
        if not name.endswith((".csv", ".parquet")):
            hint = " The extension must be .csv or .parquet."
        elif "__" not in name:
            hint = " Source, date and tag are separated by two underscores."
        elif not re.search(r"__\d{4}-\d{2}-\d{2}(__|\.)", name):
            hint = " The date must be YYYY-MM-DD."
    elif m["source"] not in SOURCES:
        hint = f" Unknown source {m['source']!r}; known: {sorted(SOURCES)}."
    elif folder_source and m["source"] != folder_source:
        hint = f" It names source {m['source']!r} but was landed in the {folder_source!r} folder."
    else:
        try:
            d = date.fromisoformat(m["date"])
        except ValueError:
            hint = f" {m['date']!r} is not a calendar date."
        else:
            if d >= MIN_PLAUSIBLE_DATE:
                return None
            hint = f" {m['date']!r} is before {MIN_PLAUSIBLE_DATE}: not a plausible available date."
    return (f"File name {name!r} does not follow the landing contract "
            f"<source>__<YYYY-MM-DD>[__tag].csv|.parquet (see docs/landing.md).{hint}")


def is_ignored(name: str) -> bool:
    """Names the pipeline never reads: hidden files, copies in progress, and the markers themselves."""
    low = name.lower()
    return name.startswith((".", "~")) or low.endswith(IN_PROGRESS_SUFFIXES) or low.endswith(MARKER_SUFFIX)


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def readiness(path: Path, sha256: str | None = None, marker_required: bool = False) -> str | None:
    """None when the landed file is complete and may be read; otherwise why it is left for the next run.

    A ``<file>.done`` marker says the file is complete; if the marker holds a sha256 the file must match it
    (a mismatch means it is still being written, or was damaged in transit). Without a marker the file is
    complete unless its source requires markers (``marker_required``, from ``settings.ingest``).
    """
    marker = marker_path(path)
    if marker.exists():
        want = re.findall(r"\b[0-9a-fA-F]{64}\b", marker.read_text(errors="replace"))
        if want and sha256 is not None and want[0].lower() != sha256:
            return (f"its marker {marker.name} holds sha256 {want[0].lower()[:12]}... but the file has "
                    f"{sha256[:12]}...: still being written or damaged in transit")
        return None
    if marker_required:
        return f"waiting for its completion marker {marker.name}"
    return None


# ISO 3166-1 alpha-2 (officially assigned) and ISO 4217 circulating currencies; the suites in
# expectations/ carry the same lists (tests check they agree).
ISO_COUNTRIES = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB",
    "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY",
    "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX",
    "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK",
    "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS",
    "GT", "GU", "GW", "GY", "HK", "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR",
    "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA",
    "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE",
    "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM",
    "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG",
    "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF",
    "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY",
    "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW"
]
ISO_CURRENCIES = [
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY", "COP", "CRC",
    "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD",
    "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL",
    "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD",
    "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG"
]
