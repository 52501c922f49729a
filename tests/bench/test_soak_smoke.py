"""bench/soak.py end to end, briefly: a real gateway process driven by real gRPC and HTTP clients
with the encoder tasks of the mix (generation is left out to keep it short: SmolLM2's first
conversion and export take minutes). What every run must show is checked: each task answered over
both transports with no error at all, memory sampled, results written; latency and growth
figures are for the benchmark run on a quiet machine, not judged here.

Runs on the benchmark's own store (bench/.stores/soak/) and writes into a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(420)
def test_a_short_soak_answers_every_task_over_both_transports_without_error(tmp_path: Path) -> None:
    command = [
        sys.executable, "bench/soak.py", "--minutes", "0.25",
        "--mix", "embed:2,similarity:1,rerank:1,tokenize:1", "--warmup-s", "5", "--bucket-s", "5",
        "--rss-interval", "1", "--results-dir", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    assert "PASS soak: errors (any answer but ok) = 0.00" in run.stdout, run.stdout[-3000:]

    payload = json.loads((tmp_path / "soak-partial.json").read_text())
    assert payload["errors"] == 0 and payload["error_kinds"] == {}
    expected = {
        f"{task} {transport}"
        for task in ("embed", "similarity", "rerank", "tokenize")
        for transport in ("gRPC", "REST")
    }
    assert set(payload["tasks"]) == expected
    assert all(stats["answers"] > 0 and stats["errors"] == 0 for stats in payload["tasks"].values())
    assert {b["start_s"] for b in payload["buckets"]} == {0, 5, 10}
    assert len(payload["rss_samples"]) >= 10 and payload["rss_after_warmup_mib"] > 0
    assert [c["name"] for c in payload["checks"]] == [
        "errors (any answer but ok)",
        "RSS growth % after warm-up",
    ]
    assert "SmolLM2-135M-Instruct" not in payload["split"]  # the mix used the encoder only
    assert "## Checks" in (tmp_path / "soak-partial.md").read_text()
