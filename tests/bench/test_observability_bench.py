"""bench/observability.py end to end, in seconds: two real gateway processes (access lines off
and JSON access lines on), real REST and gRPC clients. Figures are not judged here (timings
belong to the benchmark run on a quiet machine); what is checked is that every request was
answered, the logged server wrote one JSON access line per request and the quiet one none, and
the results were written (into a temporary folder, not bench/results/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_a_short_run_compares_both_servers_and_writes_its_results(tmp_path: Path) -> None:
    command = [
        sys.executable, "bench/observability.py", "--repeats", "1", "--seconds", "1", "--clients", "2",
        "--results-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    payload = json.loads((tmp_path / "observability-partial.json").read_text())
    rows = {(row["transport"], row["server"]): row for row in payload["rows"]}
    assert set(rows) == {(t, s) for t in ("rest", "grpc") for s in ("quiet", "access-json")}
    assert all(row["rps"] > 0 for row in rows.values())
    assert rows[("rest", "quiet")]["rps_vs_quiet"] == 1.0
    assert payload["access_lines"]["quiet"] == 0
    assert payload["access_lines"]["access-json"] > 0
    assert (tmp_path / "observability-partial.md").read_text().startswith("2 clients")
