"""bench/overload.py end to end, in seconds: a real gateway process, real gRPC and HTTP clients, the
open-loop generator in its own processes. Figures are not judged here (timings belong to the
benchmark run on a quiet machine); what is checked is what every run must show: load was offered
and answered, the excess was shed and every shed answer carried retry-after, memory was sampled,
and the results were written.

Runs on the benchmark's own store (bench/.stores/overload/, whose MiniLM export the first run
makes) and writes its results into a temporary folder, not bench/results/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(420)
def test_a_short_overload_run_sheds_with_retry_after_and_writes_its_results(tmp_path: Path) -> None:
    command = [
        sys.executable, "bench/overload.py", "--models", "encoder", "--seconds", "3",
        "--capacity-seconds", "2", "--recovery-seconds", "2", "--results-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    # exit 1 is a failed target check (timings on a shared machine); anything else is a crash
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    assert "PASS" in run.stdout or "FAIL" in run.stdout

    payload = json.loads((tmp_path / "overload-partial.json").read_text())
    assert [(r["model_id"], r["transport"]) for r in payload["rows"]] == [
        ("all-MiniLM-L6-v2", "gRPC"),
        ("all-MiniLM-L6-v2", "REST"),
    ]
    for row in payload["rows"]:
        capacity, over, recovery = row["capacity"], row["overload"], row["recovery"]
        assert capacity["ok"] > 0 and recovery["ok"] > 0
        assert row["offered_rate"] > capacity["ok_per_s"]  # 10x what was measured
        assert over["sent"] > 0 and over["ok"] > 0
        assert over["shed"] > 0, "10x capacity with 32 admitted at once must shed"
        assert over["shed_without_retry_after"] == 0
        assert 0 < row["rss_start_mib"] <= row["rss_peak_mib"]
        assert len(row["checks"]) == 8
        assert row["server_cores_overload"] > 0 and over["generator_cores"] > 0  # both sides worked
        assert isinstance(row["listen_overflows"], int)
    (server,) = payload["rss"]
    assert len(server["samples"]) > 4
    assert [m["phase"] for m in server["phases"]] == [
        f"{transport} {phase}"
        for transport in ("gRPC", "REST")
        for phase in ("capacity", "overload", "recovery")
    ]
    text = (tmp_path / "overload-partial.md").read_text()
    assert "## Checks" in text and "all-MiniLM-L6-v2 | gRPC | max inflight 32 per model, 32 process |" in text
