"""`sunat-pipeline ingest --date D [--source S]`: what the DAG's ingest tasks run, one line per file; a rejected
file is an outcome (exit 0), only an internal error exits non-zero."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_ingest_bad_input import DAY, _settings, csv_bytes, good_frame, land

from sunat_pipeline import ingest
from sunat_pipeline.cli import main


def test_ingest_prints_each_files_outcome_and_exits_0_when_a_file_is_rejected(tmp_path, monkeypatch, capsys):
    settings = _settings(tmp_path)
    monkeypatch.setenv("SUNAT_LAKE_ROOT", str(settings.lake))
    land(settings, f"customs__{DAY}.csv", csv_bytes(good_frame(3, seq0=0)))
    land(settings, f"customs__{DAY}__bad.csv", csv_bytes(good_frame(3, seq0=10).assign(fob_usd="-1")))
    land(settings, f"tax__{DAY}.csv", b"", source="tax")
    assert main(["ingest", "--date", DAY.isoformat(), "--source", "customs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "source\tfile\tstatus\trows\treport"
    rows = {cells[1]: cells for cells in (line.split("\t") for line in lines[1:-1])}
    assert rows[f"customs__{DAY}.csv"][2:4] == ["accepted", "3"]
    assert rows[f"customs__{DAY}__bad.csv"][2:4] == ["rejected", "3"]
    report = Path(rows[f"customs__{DAY}__bad.csv"][4])
    assert report.name.endswith(".report.txt") and "REJECTED" in report.read_text()
    assert f"tax__{DAY}.csv" not in rows  # only the source asked for
    assert "accepted" in lines[-1] and "Data Docs" in lines[-1]
    # Every source by default: the same function as the DAG's tasks, so the customs files are now duplicates.
    assert main(["ingest", "--date", DAY.isoformat()]) == 0
    rows = {c[1]: c for c in (line.split("\t") for line in capsys.readouterr().out.splitlines()[1:-1])}
    assert rows[f"customs__{DAY}.csv"][2] == "duplicate" and rows[f"tax__{DAY}.csv"][2] == "rejected"
    assert len(ingest.manifest(settings)) == 3
    assert main(["ingest", "--date", DAY.isoformat(), "--source", "nope"]) == 2


def test_an_internal_error_exits_non_zero(tmp_path):
    lake = tmp_path / "data"
    lake.write_text("a file where the lake folder should be")
    r = subprocess.run([sys.executable, "-m", "sunat_pipeline.cli", "ingest", "--date", DAY.isoformat(),
                        "--source", "customs"], env={**os.environ, "SUNAT_LAKE_ROOT": str(lake)},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr
