"""bench/report.py turns the benchmarks' JSON into one page (Markdown + PNG).

The JSON files are written by each benchmark's own result code (overload.write_results,
soak.write_results, the encoder and generation benchmarks' row dataclasses in the shape their
report() writes) from small inputs, so the report reads exactly the schema the benchmarks write.
No gateway and no model: fast.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bench import encoder_throughput, generation, overload, report, soak
from bench.openloop import Tally
from bench.traffic import Outcome

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tally(ok: list[float], shed: list[float], seconds: float, sent: int) -> Tally:
    tally = Tally(sent=sent, seconds=seconds)
    for ms in ok:
        tally.add(Outcome("ok", ms))
    for ms in shed:
        tally.add(Outcome("shed", ms, retry_after=True))
    return tally


def _write_overload(folder: Path) -> dict:
    target = overload.Target("encoder", "all-MiniLM-L6-v2", "embed", clients=32, admission="max inflight 32")
    phases = {
        "capacity": _tally([20.0, 30.0, 40.0, 55.0], [], seconds=2.0, sent=4),
        "overload": _tally([25.0, 35.0, 61.0], [1.5, 2.5, 3.0, 4.0], seconds=2.0, sent=7),
        "recovery": _tally([21.0, 33.0, 50.0], [], seconds=2.0, sent=3),
    }
    split = {
        "capacity": {"queue_ms": 1.25, "model_ms": 12.5, "overhead_ms": 0.75},
        "overload": None,
        "recovery": None,
    }
    row = overload.build_row(target, "gRPC", 20.0, phases, (300.0, 312.0, 303.0), split)
    rss = [{"server": target.model, "samples": [[0.0, 300.0], [1.0, 312.0], [2.0, 303.0]],
            "phases": [{"phase": "gRPC overload", "start": 0.5, "end": 1.5}]}]  # fmt: skip
    payload = {
        "settings": {"factor": 10.0, "seconds": 2.0, "workers": 2, "max_outstanding": 100, "tokens": 16},
        "rows": [row],
        "rss": rss,
    }
    overload.write_results(payload, folder, "overload")
    return row


def _write_soak(folder: Path) -> dict:
    events = [
        (t, task, transport, Outcome("ok", 10.0 + t + (100.0 if task == "generate" else 0.0)))
        for t in range(0, 20, 2)
        for task in ("embed", "generate")
        for transport in ("gRPC", "REST")
    ]
    rss = [(float(t), 400.0 + t / 10) for t in range(0, 21, 2)]
    settings = {"minutes": 1 / 3, "seconds": 20.0, "mix": "embed:1,generate:1", "tokens": 16,
                "warmup_s": 6.0, "bucket_s": 10.0, "rss_interval": 2.0}  # fmt: skip
    split = {
        "all-MiniLM-L6-v2": {"queue_ms": 2.5, "model_ms": 7.5, "overhead_ms": 1.0},
        "SmolLM2-135M-Instruct": None,
    }
    payload = soak.summarize(events, rss, settings, split)
    soak.write_results(payload, folder, "soak")
    return payload


def _write_encoder(folder: Path) -> None:
    rows = [
        encoder_throughput.Row("taskgate", "gRPC", "short", "closed", clients, rps, 5.0, 9.5, 0, 0.4)
        for clients, rps in ((1, 111.0), (32, 654.3))
    ]
    (folder / "encoder_throughput-partial.json").write_text(
        json.dumps({"raw": {}, "rows": [asdict(r) for r in rows]})
    )


def _write_generation(folder: Path) -> None:
    rows = [generation.Row(n, 42.5 * n, 80.0, 120.0, 30.0, 45.0, 0, 10.0, 40.0 * n) for n in (1, 4)]
    (folder / "generation.json").write_text(json.dumps({"settings": {}, "rows": [asdict(r) for r in rows]}))


def test_report_holds_the_figures_of_each_benchmark_present(tmp_path: Path) -> None:
    row = _write_overload(tmp_path)
    soaked = _write_soak(tmp_path)
    _write_encoder(tmp_path)
    _write_generation(tmp_path)
    (tmp_path / "soak-partial.json").write_text("{}")  # the full run's file wins over a partial one

    assert report.main(["--results-dir", str(tmp_path)]) == 0

    png, md = tmp_path / "report.png", tmp_path / "report.md"
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 10_000
    text = md.read_text()
    assert "![plots](report.png)" in text
    # overload: capacity 4 answers in 2 s, admitted p99, shed count, RSS start / peak / end
    assert f"| all-MiniLM-L6-v2 | gRPC | max inflight 32 | 2.0 | {row['capacity']['ok_p99_ms']:.1f} |" in text
    assert f"| {row['overload']['ok_p99_ms']:.1f} | 4 |" in text
    assert "300.0 / 312.0 / 303.0" in text
    assert "From `overload.json`." in text and "From `soak.json`." in text
    # soak: growth and per-task rows; the split rows of both benchmarks
    assert f"{soaked['rss_growth_pct']:.2f} %" in text
    assert "| embed gRPC | 0.5 | 0 |" in text
    assert "| encoder gRPC capacity | 1.25 | 12.50 | 0.75 |" in text
    assert "| soak all-MiniLM-L6-v2 | 2.50 | 7.50 | 1.00 |" in text
    # encoder (a partial file, marked) and generation
    assert "From `encoder_throughput-partial.json` (a partial / smoke run)." in text
    assert "| 32 | 654.3 | 5.0 | 9.5 | 0 |" in text
    assert "| 4 | 170.0 | 80 / 120 |" in text
    assert "Not present (skipped): adapters_mixed, tuning_beside_serving." in text


def test_report_of_an_empty_folder_is_a_page_saying_nothing_was_found(tmp_path: Path) -> None:
    assert report.main(["--results-dir", str(tmp_path), "--name", "empty"]) == 0
    assert (tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)
    text = (tmp_path / "empty.md").read_text()
    assert "Not present (skipped): encoder_throughput, generation, overload, soak" in text
    assert "No split recorded" in text


def test_overload_checks_follow_the_figures() -> None:
    """build_row's pass / fail lines: ratios against the limits, every shed answer with retry-after."""
    target = overload.Target("encoder", "m", "embed", clients=4, admission="max inflight 4")
    capacity = _tally([10.0] * 10, [], seconds=1.0, sent=10)
    slow = _tally([50.0] * 10, [1.0] * 5, seconds=1.0, sent=15)
    slow.add(Outcome("shed", 2.0, retry_after=False))
    recovery = _tally([12.0] * 10, [], seconds=1.0, sent=10)
    phases = {"capacity": capacity, "overload": slow, "recovery": recovery}
    row = overload.build_row(target, "REST", 100.0, phases, (100.0, 104.0, 101.0), {})
    verdicts = {c["name"]: c["passed"] for c in row["checks"]}
    assert verdicts == {
        "admitted p99 / capacity p99": False,  # 50 / 10
        "shed p99 ms <= capacity p50 ms": True,
        "shed answers without retry-after": False,  # one shed answer lacked it
        "overload errors (not 429 / RESOURCE_EXHAUSTED)": True,
        "RSS peak / start": True,
        "RSS end / start": True,
        "recovery p99 / capacity p99": True,
        "recovery errors + shed": True,
    }
    assert not row["passed"]
    lines = overload.check_lines(row)
    assert "- FAIL m REST: admitted p99 / capacity p99 = 5.00 (limit 2.00)" in lines
