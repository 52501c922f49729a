"""bench/generation_runs.py: medians and per-run ratios over hand-made --peers results."""

from __future__ import annotations

import json
from pathlib import Path

from bench.generation_runs import OURS, ratios, report


def _run(path: Path, ours: float, fastest: float, same: float) -> Path:
    def cell(rate: float) -> dict[str, float]:
        return {"tokens_per_s": rate, "ttft_p50_ms": 10.0, "ttft_p99_ms": rate, "short": 0}

    systems = [
        {"name": OURS, "cells": {"1": cell(ours)}},
        {"name": "peer", "cells": {"1": cell(fastest)}},
        {"name": "peer on ours", "cells": {"1": cell(same)}, "same_graph": True},
        {"name": "absent", "cells": {}, "missing": "not installed: bash bench/peers/setup.sh llamacpp"},
    ]
    path.write_text(json.dumps({"systems": systems}))
    return path


def test_ratios_are_taken_within_each_run_and_their_median_reported(tmp_path: Path) -> None:
    paths = [
        _run(tmp_path / "a.json", ours=60, fastest=100, same=80),  # 0.600, 0.750
        _run(tmp_path / "b.json", ours=90, fastest=100, same=90),  # 0.900, 1.000
        _run(tmp_path / "c.json", ours=70, fastest=100, same=100),  # 0.700, 0.700
    ]
    text = report(paths)
    assert "- N=1: Taskgate / fastest peer, median 0.700 (runs 0.600 / 0.900 / 0.700)" in text
    assert "- N=1: Taskgate / the peer on Taskgate's graph, median 0.750 (runs 0.750 / 1.000 / 0.700)" in text
    assert f"| {OURS} | 70.0 (60.0 / 90.0 / 70.0) | 70 |" in text
    assert "absent" not in text  # a row without figures is left out


def test_a_run_without_taskgate_or_peers_has_no_ratio(tmp_path: Path) -> None:
    run = {OURS: {"cells": {"1": {"tokens_per_s": 5.0}}}}
    assert ratios(run, "1") == (None, None)
    assert ratios({}, "1") == (None, None)
