"""Data of the synthetic world that no difficulty knob changes: goods, countries, currencies, taxes.

Knobs (how noisy, how much fraud, how fraudsters react...) live in config/world.yaml.
"""

from __future__ import annotations

import pandas as pd

# HS10 code, description, duty ad valorem, base unit price USD/kg, kg per unit, flag.
# Chapters hold codes with different duties so misclassification into a cheaper code is possible.
# Flags: ipr (brand-sensitive), cites / waste / precursor (restricted: a permit is needed).
HS_CATALOGUE = [
    ("6109100000", "T-shirts of cotton, knitted", 0.11, 22.0, 0.2, ""),
    ("6110200000", "Sweaters of cotton, knitted", 0.11, 26.0, 0.45, ""),
    ("6117809000", "Knitted clothing accessories", 0.06, 18.0, 0.1, ""),
    ("6403990000", "Footwear, leather uppers", 0.11, 40.0, 0.9, "ipr"),
    ("6402990000", "Footwear, rubber or plastics", 0.06, 14.0, 0.7, ""),
    ("6406100000", "Uppers and parts of footwear", 0.04, 9.0, 0.3, ""),
    ("8471300000", "Portable computers", 0.0, 160.0, 2.0, ""),
    ("8473300000", "Parts of computers", 0.0, 90.0, 0.5, ""),
    ("8418109000", "Refrigerators", 0.06, 6.0, 60.0, ""),
    ("8450110000", "Washing machines", 0.06, 5.5, 55.0, ""),
    ("8415101000", "Air conditioners", 0.06, 8.0, 35.0, ""),
    ("8517130000", "Smartphones", 0.0, 420.0, 0.25, "ipr"),
    ("8528720000", "Television receivers", 0.06, 22.0, 12.0, ""),
    ("8516500000", "Microwave ovens", 0.06, 7.0, 14.0, ""),
    ("8544429000", "Electric conductors", 0.04, 6.5, 5.0, ""),
    ("8507600000", "Lithium-ion batteries", 0.04, 30.0, 0.5, ""),
    ("8708299000", "Parts of motor vehicle bodies", 0.04, 7.0, 8.0, ""),
    ("8711200000", "Motorcycles 50-250 cc", 0.11, 8.0, 110.0, ""),
    ("8714109000", "Parts of motorcycles", 0.04, 9.0, 2.0, ""),
    ("3923210000", "Sacks and bags of polyethylene", 0.06, 2.8, 0.05, ""),
    ("3901100000", "Polyethylene in primary forms", 0.0, 1.3, 25.0, ""),
    ("3915900000", "Waste and scrap of plastics", 0.0, 0.35, 1000.0, "waste"),
    ("2914110000", "Acetone", 0.0, 1.1, 200.0, "precursor"),
    ("2902300000", "Toluene", 0.0, 1.0, 200.0, "precursor"),
    ("2905120000", "Propan-1-ol and propan-2-ol", 0.0, 1.5, 200.0, ""),
    ("0106190000", "Live mammals, other", 0.0, 250.0, 5.0, "cites"),
    ("0106200000", "Live reptiles", 0.0, 180.0, 1.0, "cites"),
    ("4103300000", "Raw hides and skins of reptiles", 0.0, 120.0, 1.0, "cites"),
    ("3304990000", "Beauty or make-up preparations", 0.06, 28.0, 0.2, "ipr"),
    ("3303000000", "Perfumes and toilet waters", 0.06, 45.0, 0.3, "ipr"),
    ("9503009900", "Toys, other", 0.11, 9.0, 0.5, "ipr"),
    ("9503002200", "Toy parts and accessories", 0.04, 7.0, 0.2, ""),
    ("2208300000", "Whiskies", 0.11, 14.0, 1.2, "ipr"),
    ("2204210000", "Wine in containers of 2 l or less", 0.11, 6.0, 1.2, ""),
    ("4011100000", "Tyres for motor cars", 0.06, 4.5, 9.0, ""),
    ("4011200000", "Tyres for buses or lorries", 0.04, 4.0, 45.0, ""),
    ("7208510000", "Flat-rolled iron, > 10 mm", 0.0, 0.7, 1000.0, ""),
    ("7210490000", "Flat-rolled iron, zinc coated", 0.04, 0.95, 1000.0, ""),
]
RESTRICTED_FLAGS = ("cites", "waste", "precursor")
PERMIT_ISSUERS = {"precursor": "IQBF", "waste": "MINAM", "cites": "SERFOR"}

ORIGINS = {  # where goods are made: price level, share of imports
    "CN": (0.80, 0.38), "US": (1.20, 0.12), "BR": (0.95, 0.05), "CO": (0.95, 0.04),
    "CL": (1.00, 0.04), "MX": (0.95, 0.04), "DE": (1.30, 0.05), "IN": (0.80, 0.05),
    "KR": (1.10, 0.05), "JP": (1.30, 0.04), "EC": (0.90, 0.03), "AR": (0.95, 0.03),
    "VN": (0.75, 0.03), "TH": (0.85, 0.02), "IT": (1.25, 0.03), "ES": (1.10, 0.02),
    "BO": (0.90, 0.01), "FR": (1.25, 0.02),
}
# Origins with a 0% preferential duty (Andean Community): the target of origin misdeclaration.
PREFERENTIAL_ORIGINS = ("CO", "EC", "BO")
EUR_COUNTRIES = ("DE", "IT", "ES", "FR", "NL")
EUR_PER_USD = 0.92
MECHANISMS = ("undervaluation", "misclassification", "origin", "quantity", "prohibited", "counterfeit")
REVENUE_MECHANISMS = ("undervaluation", "misclassification", "origin", "quantity")


def hs_frame(extra: list[tuple] | None = None) -> pd.DataFrame:
    """The goods catalogue (plus lines created during the simulation, e.g. by a tariff amendment)."""
    rows = HS_CATALOGUE + list(extra or [])
    return pd.DataFrame(rows, columns=["hs_code", "description", "duty_rate", "base_price", "kg_per_unit", "flag"])


def currency_of(country: str) -> str:
    return "EUR" if country in EUR_COUNTRIES else "USD"
