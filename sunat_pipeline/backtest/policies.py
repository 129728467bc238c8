"""Selection policies for backtests: named overlays of the pipeline's settings.

A policy is a YAML file with a ``description`` and ``settings``: a partial settings tree merged over the
base settings (``config/policies/<name>.yaml``, or any path). The backtest runs the same pipeline, once per
policy, with the merged settings, so a policy can change anything a setting can (shares, scorer, rule
weights, training), and a user adds one by writing a file. ``capacity_overlay`` gives every policy of a
comparison the same capacity: a share of each office's recent volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sunat_pipeline.settings import Settings

SHIPPED = ("random", "legacy_rules", "rules_learned", "exploit", "hybrid_no_explore", "hybrid")
RED_SHARE_OF_CAPACITY = 0.4  # of a backtest's capacity, physical exams; the rest documentary checks


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    path: str = ""


def policy_dir(settings: Settings) -> Path:
    return settings.root / "config" / "policies"


def available(settings: Settings) -> list[str]:
    return sorted(p.stem for p in policy_dir(settings).glob("*.yaml"))


def load_policy(settings: Settings, name_or_path: str) -> Policy:
    """A shipped or user policy by name (``config/policies/NAME.yaml``), or a YAML file by path."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = policy_dir(settings) / f"{name_or_path}.yaml"
    if not p.exists():
        raise FileNotFoundError(f"no policy {name_or_path!r}: known {', '.join(available(settings))}, or give a "
                                "path to a YAML file")
    spec = yaml.safe_load(p.read_text()) or {}
    unknown = set(spec) - {"description", "settings", "name"}
    if unknown:
        raise ValueError(f"policy {p}: unknown keys {sorted(unknown)} (expected description, settings)")
    pol = Policy(name=str(spec.get("name") or p.stem), description=" ".join(str(spec.get("description", "")).split()),
                 settings=dict(spec.get("settings") or {}), path=str(p))
    apply(settings, pol)  # fails now, naming the policy, if the overlay is not valid settings
    return pol


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply(settings: Settings, policy: Policy | dict, **extra: Any) -> Settings:
    """The base settings with the policy's overlay (and ``extra`` overlays, e.g. ``capacity_overlay``) merged in."""
    over = policy.settings if isinstance(policy, Policy) else policy
    merged = settings.model_dump()
    for o in (over, *extra.values()):
        merged = _merge(merged, o or {})
    try:
        return type(settings).model_validate(merged)
    except Exception as e:
        name = policy.name if isinstance(policy, Policy) else "overlay"
        raise ValueError(f"policy {name}: its settings are not valid: {e}") from e


def capacity_overlay(share: float) -> dict:
    """Every office inspects ``share`` of its average daily declarations (volume mode), 40% RED, 60% YELLOW."""
    if not 0 < share <= 1:
        raise ValueError(f"capacity {share} must be a share in (0, 1]")
    return {"selection": {"capacity": {}, "default_capacity_mode": "volume",
                          "red_share": round(RED_SHARE_OF_CAPACITY * share, 6),
                          "yellow_share": round((1 - RED_SHARE_OF_CAPACITY) * share, 6)}}
