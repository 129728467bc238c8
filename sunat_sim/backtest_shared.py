"""Shared ingest for the backtest: the policy-independent sources ingested once per seed and day, not once per policy.

Every source but enforcement (customs declarations, tax, reference prices, exchange rates, permits) lands the same
files for every policy of a seed: only the inspection outcomes depend on what a policy selected. So, per seed,
a shared lake (a copy of the world with its history ingested) ingests those sources day by day with the
pipeline's own step (``sunat_pipeline.daily.ingest``: GX validation, bronze, manifest, silver), and after each
day the folders that step writes are kept as a snapshot of hard links. Before a run's day D, its lake is made to
hold exactly day D's snapshot of those folders (links; files the step replaced or removed are replaced or
removed): the run's own ``run_day`` then finds these files ingested (the manifest knows their bytes) and
validates, stores and merges only its enforcement extracts; reconciliation, scoring and everything else run as
before on the same silver. A run whose ingest settings differ from the shared lake's ingests everything itself.

Links are safe because the lake never writes a file in place (every write is a new file renamed over the old
one), so a run replacing a file never changes the snapshot or another run's copy. What differs from an
unshared run: the validation records of the shared files name the shared lake's paths, and their manifest
records the shared ingest's times.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from datetime import date
from pathlib import Path

from sunat_pipeline.ingest.silver_tables import HISTORY_DIR
from sunat_pipeline.ingest.sources import DAILY_SOURCES
from sunat_pipeline.settings import Settings

# Policy-independent: every daily source but the one that carries each policy's own inspection outcomes.
SHARED_SOURCES = tuple(s for s in DAILY_SOURCES if s != "enforcement")
SNAPSHOTS = "days"
STAMP = "shared_key.json"
CHANGES = "changes.json"  # in a day's snapshot: what changed since the previous day's
APPLIED = ".shared_ingest_day"  # in a run's lake: the last snapshot applied to it


def trees(source: str) -> list[str]:
    """The folders (relative to the lake) that ingesting ``source`` writes: bronze and its manifest records,
    quarantine, silver and its superseded versions, the GX validation results (suite named as the source)."""
    return [f"bronze/{source}", f"bronze/_manifest/{source}", f"quarantine/{source}", f"silver/{source}",
            f"silver/{HISTORY_DIR}/{source}", f"gx/uncommitted/validations/{source}"]


def _files(root: Path) -> dict[Path, Path]:
    return {p.relative_to(root): p for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def _link(p: Path, q: Path) -> None:
    """``q`` becomes a hard link to ``p``, atomically (a reader sees the old file or the new one)."""
    q.parent.mkdir(parents=True, exist_ok=True)
    tmp = q.with_name(f".{q.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(p, tmp)
    except OSError:  # a filesystem without hard links: a copy (the same bytes, more disk)
        shutil.copy2(p, tmp)
    os.replace(tmp, q)


def link_tree(src: Path, dst: Path) -> int:
    """Make ``dst`` hold exactly ``src``'s files as hard links (a file already linked is left alone). Returns
    the number of files linked or removed."""
    want, have = _files(src), _files(dst)
    changed = 0
    for rel, p in want.items():
        q = dst / rel
        if rel in have and os.path.samestat(p.stat(), have[rel].stat()):
            continue
        _link(p, q)
        changed += 1
    for rel in have.keys() - want.keys():
        (dst / rel).unlink()
        changed += 1
    if changed and dst.exists():  # folders the step removed (a partition rewritten under another name)
        keep = {dst / r.parent for r in want} | {dst}
        for d in sorted((p for p in dst.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if d not in keep and not any(d.iterdir()):
                d.rmdir()
    return changed


def _inodes(snap: Path) -> dict[str, int]:
    return {str(r): p.stat().st_ino for source in SHARED_SOURCES for rel in trees(source)
            for r, p in ((Path(rel) / k, v) for k, v in _files(snap / rel).items())}


def _record_changes(snap: Path, prev: Path | None, prev_files: dict[str, int]) -> dict[str, int]:
    """Write what ``snap`` changed from ``prev`` (files linked anew, files removed): a run whose lake holds
    ``prev`` then applies only that. Returns ``snap``'s files (path -> inode) for the next day."""
    now = _inodes(snap)
    changes = {"after": prev.name if prev is not None else None,
               "link": sorted(r for r, ino in now.items() if prev_files.get(r) != ino),
               "remove": sorted(prev_files.keys() - now.keys())}
    (snap / CHANGES).write_text(json.dumps(changes))
    return now


def snapshot_dir(shared: Path, day: date) -> Path:
    return Path(shared) / SNAPSHOTS / day.isoformat()


def prepare(world: Path, shared: Path, settings_for, days: list[date], key: dict) -> None:
    """Ingest the shared sources of every live day into ``shared``/lake (a copy of the world after its history
    ingest), keeping each day's snapshot; reused while ``key`` is the same. ``settings_for(lake)``: the
    settings a run would ingest with, for that lake."""
    from sunat_pipeline import daily

    shared = Path(shared)
    stamp = shared / STAMP
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        return
    shutil.rmtree(shared, ignore_errors=True)
    t = time.time()
    lake = shared / "lake"
    shutil.copytree(world, lake, ignore=shutil.ignore_patterns("world_key.json", "unused-mlflow.db*", "world_truth"))
    s = settings_for(lake)
    quiet = logging.getLogger("sunat_pipeline")  # a line per file and day would bury the progress lines
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        prev, prev_files = None, {}
        for day in days:
            for source in SHARED_SOURCES:  # the order of run_day
                daily.ingest(s, source, day)
            snap = snapshot_dir(shared, day)
            for source in SHARED_SOURCES:
                for rel in trees(source):
                    link_tree(lake / rel, snap / rel)
            prev_files, prev = _record_changes(snap, prev, prev_files), snap
    finally:
        quiet.setLevel(level)
    stamp.write_text(json.dumps(key, indent=2))
    print(f"[backtest] shared ingest of {', '.join(SHARED_SOURCES)}: {len(days)} days ({time.time() - t:.0f} s)",
          flush=True)


def apply(shared: Path, day: date, lake: Path) -> int:
    """Give ``lake`` the shared sources as ingested up to ``day`` (before the run's own ``run_day``). A lake that
    holds the previous day's snapshot (the run's day before) gets only what changed since; any other lake is
    walked in full. Returns the number of files linked or removed."""
    snap, lake = snapshot_dir(shared, day), Path(lake)
    if not snap.exists():
        raise FileNotFoundError(f"no shared ingest snapshot for {day} at {snap}")
    applied, changes = lake / APPLIED, snap / CHANGES
    diff = json.loads(changes.read_text()) if changes.exists() else None
    if diff is not None and diff["after"] is not None and applied.exists() and applied.read_text() == diff["after"]:
        for rel in diff["link"]:
            _link(snap / rel, lake / rel)
        for rel in diff["remove"]:
            gone = lake / rel
            gone.unlink(missing_ok=True)
            tops = {lake / t for source in SHARED_SOURCES for t in trees(source)}
            d = gone.parent
            while d not in tops and d.is_relative_to(lake) and d.exists() and not any(d.iterdir()):
                d.rmdir()  # a folder the step emptied (a partition rewritten under another name)
                d = d.parent
        n = len(diff["link"]) + len(diff["remove"])
    else:
        n = sum(link_tree(snap / rel, lake / rel) for source in SHARED_SOURCES for rel in trees(source))
    applied.write_text(snap.name)
    return n


def compatible(run: Settings, shared: Settings) -> bool:
    """The shared ingest stands for the run's own only when they ingest with the same settings."""
    return run.ingest == shared.ingest and run.expectations_dir == shared.expectations_dir
