"""Retraining requests: the drift check writes one when a variable drifts past the threshold
(``monitor.check``); ``train.train_if_due`` honours it (``retrain_request``) at most once per cooldown.
Kept apart from ``monitor`` so that training reads requests without importing the drift machinery.

    gold/monitoring/retrain_requests/request_YYYY-MM-DD.json
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from pathlib import Path

from sunat_pipeline.lake.store import atomic_write_bytes
from sunat_pipeline.settings import Settings

log = logging.getLogger(__name__)


def requests_dir(settings: Settings) -> Path:
    return settings.retrain_requests_dir


def _requests(settings: Settings) -> list[tuple[date, Path]]:
    d = requests_dir(settings)
    out = []
    for p in sorted(d.glob("request_????-??-??.json")) if d.exists() else []:
        out.append((date.fromisoformat(p.stem.removeprefix("request_")), p))
    return out


def request_retrain(settings: Settings, day: date, version: str | None, major: list[str]) -> bool:
    """Write day ``day``'s request (drift of model ``version`` on the ``major`` variables) unless requests are
    off or one was made within the cooldown; returns whether it was written."""
    m = settings.monitoring
    if not m.request_retrain:
        return False
    recent = [d for d, _ in _requests(settings) if day - timedelta(days=m.cooldown_days) < d < day]
    if recent:
        log.warning("drift %s persists; a retraining was already requested on %s (cooldown %d days): a modeler "
                    "should look at the features and the training window", day, recent[-1], m.cooldown_days)
        return False
    rec = {"requested_on": day.isoformat(), "model_version": version, "reason": "drift",
           "variables": major, "threshold": m.psi_threshold}
    atomic_write_bytes(requests_dir(settings) / f"request_{day.isoformat()}.json",
                       json.dumps(rec, indent=2).encode())
    log.warning("drift %s: retraining requested for the next run (%s)", day, ", ".join(major))
    return True


def retrain_request(settings: Settings, asof: date, last_training: date | None) -> str | None:
    """The reason to retrain on ``asof`` if a drift request made before ``asof`` is not yet served by a
    training on or after its date; else ``None``. Called by ``train.train_if_due``."""
    pending = [(d, p) for d, p in _requests(settings) if d < asof and (last_training is None or d >= last_training)]
    if not pending:
        return None
    d, p = pending[-1]
    rec = json.loads(p.read_text())
    return f"drift requested on {d} ({', '.join(rec.get('variables', []))})"
