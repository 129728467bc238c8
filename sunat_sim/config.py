"""What a world is made of: run parameters (``WorldConfig``) and knobs (config/world.yaml, with presets)."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DIFFICULTIES = ("easy", "realistic", "hard")
DEFAULT_DIFFICULTY = "realistic"
CONFIG_ENV = "SUNAT_WORLD_CONFIG"  # another world configuration file


def default_config_file() -> Path:
    return Path(os.environ.get(CONFIG_ENV, Path(__file__).resolve().parent.parent / "config" / "world.yaml"))


def _merge(base: dict, over: dict, where: str = "") -> dict:
    """``base`` with ``over`` laid on top; a preset may only override knobs that exist."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in out:
            raise KeyError(f"preset sets an unknown knob {where}{k}")
        out[k] = _merge(out[k], v, f"{where}{k}.") if isinstance(v, dict) and isinstance(out[k], dict) else v
    return out


def load_knobs(difficulty: str = DEFAULT_DIFFICULTY, path: Path | None = None) -> dict:
    """The knobs of a difficulty: the file's values, with the preset's overrides for easy/hard."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; choose one of {DIFFICULTIES}")
    raw = yaml.safe_load(Path(path or default_config_file()).read_text())
    presets = raw.pop("presets", {}) or {}
    return raw if difficulty == DEFAULT_DIFFICULTY else _merge(raw, presets.get(difficulty) or {})


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 42
    start_date: date = date(2026, 1, 1)
    history_days: int = 180
    live_days: int = 14
    declarations_per_day: int = 300
    min_delay_days: int = 1
    max_delay_days: int = 5
    difficulty: str = DEFAULT_DIFFICULTY
    tax_world: bool = False  # also land the tax side (sunat_sim/tax_world.py, docs/tax.md); the demo turns it on
    knobs: dict | None = field(default=None, compare=False, repr=False)  # None: read config/world.yaml

    @cached_property
    def k(self) -> dict:
        """The resolved knobs (given, or loaded from the world configuration file for the difficulty)."""
        return self.knobs if self.knobs is not None else load_knobs(self.difficulty)

    @property
    def total_days(self) -> int:
        return self.history_days + self.live_days

    @property
    def first_live_date(self) -> date:
        return self.start_date + timedelta(days=self.history_days)

    @property
    def last_history_date(self) -> date:
        return self.first_live_date - timedelta(days=1)

    @property
    def live_dates(self) -> list[date]:
        return [self.first_live_date + timedelta(days=i) for i in range(self.live_days)]

    def day(self, index: int) -> date:
        return self.start_date + timedelta(days=int(index))

    def index(self, d: date) -> int:
        return (d - self.start_date).days

    def scheme_start(self, scheme: dict) -> int:
        """Day index a scheme starts: an ISO date, or days after the first live day."""
        s = scheme["start"]
        return self.index(date.fromisoformat(s)) if isinstance(s, str) else self.history_days + int(s)

    def to_json(self) -> dict:
        d = asdict(self)
        d["start_date"] = self.start_date.isoformat()
        d["first_live_date"] = self.first_live_date.isoformat()
        d["knobs"] = self.k
        d["schemes"] = {s["name"]: self.day(self.scheme_start(s)).isoformat() for s in self.k["schemes"]}
        return d

    @classmethod
    def from_json(cls, d: dict) -> WorldConfig:
        keys = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in keys}
        kw["start_date"] = date.fromisoformat(kw["start_date"])
        return cls(**kw)


def rng(seed: int, *key: int) -> np.random.Generator:
    """One independent random stream per (seed, purpose, day...): the same seed gives the same world."""
    return np.random.default_rng([seed, *key])


# Random stream purposes (one place, so two purposes never share a stream).
S_ENTITIES, S_DAY, S_LEGACY, S_TAX, S_FX, S_LEGACY_INSPECT, S_PIPELINE_INSPECT, S_ADAPT, S_PRICES, S_PERMITS, \
    S_SCHEMES = range(1, 12)
S_TAX_PEOPLE, S_TAX_MONTHS, S_TAX_FILING, S_TAX_AUDIT = range(12, 16)  # the tax side (sunat_sim/tax_world.py)


def dumps(obj: Any) -> bytes:
    """JSON keeping the knobs' order: draws over a mapping (offices, mechanisms) follow it."""
    return json.dumps(obj, indent=2).encode()
