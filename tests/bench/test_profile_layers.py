"""bench/profile_layers.py's reading of py-spy's raw output: each stack goes to one layer, the
innermost frame a rule names deciding, and each thread's CPU is shared out by its own samples.
The stacks are shortened from a real profile of the gateway (py-spy record -f raw --threads)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.profile_layers import LAYERS, NATIVE, attribute, layer_of, parse_raw, table

LOOP = (
    "thread (100): MainThread;<module> (gateway/cli.py:100);Runner.run (asyncio/runners.py:118);"
    "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)"
)
WORKER = "thread (200);Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:83)"
RAW = "\n".join(
    [
        f"{LOOP};EpollSelector.select (selectors.py:468) 30",
        f"{LOOP};AccessGate.__call__ (gateway/frontends/http/access_gate.py:81) 5",
        f"{LOOP};TaskFastPath._serve (gateway/frontends/http/task_fast_path.py:80);"
        "BaseModel.model_validate (pydantic/main.py:716) 4",
        f"{LOOP};embed_one (gateway/frontends/http/caikit_tasks.py:130);"
        "TaskService.embed (gateway/core.py:123);TaskService._batched (gateway/core.py:355);"
        "EncoderTokenizer.rows (runtimes/encoder_tokenizer.py:88) 6",
        f"{LOOP};TaskService._batched (gateway/core.py:366);DynamicBatcher.submit (gateway/batcher.py:150);"
        "gather (asyncio/tasks.py:825) 3",
        f"{LOOP};embed_one (gateway/frontends/http/caikit_tasks.py:131);"
        "embedding (gateway/frontends/http/convert.py:33);_vector (gateway/frontends/http/convert.py:27) 2",
        f"{LOOP};TaskFastPath._serve (gateway/frontends/http/task_fast_path.py:90);"
        "_dumps (gateway/frontends/http/task_fast_path.py:131) 1",
        f"{WORKER};_WorkItem.run (concurrent/futures/thread.py:58);EncoderBatchers.batcher.<locals>.run "
        "(gateway/encoding.py:61);OnnxEncoder.run_batch (runtimes/onnx_encoder.py:96);"
        "InferenceSession.run (onnxruntime/capi/onnxruntime_inference_collection.py:287) 36",
        f"{WORKER};EncoderBatchers.batcher.<locals>.run (gateway/encoding.py:60);"
        "pad_rows (runtimes/base.py:120) 4",
        "thread (200);Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:81) 50",
        "thread (300);Thread._bootstrap_inner (threading.py:1045);"
        "WorkerThread.run (anyio/_backends/_asyncio.py:1124) 9",
        "thread (400);<module> (somewhere.py:1) 1",
        "not a sample line",
    ]
)


def test_each_stack_goes_to_the_innermost_named_layer_of_its_thread() -> None:
    samples = parse_raw(RAW)
    assert samples == {
        100: Counter(
            {
                "transport": 35,  # the loop's own select, and the access gate
                "parse / validate": 4,
                "tokenize": 6,
                "batcher": 3,  # the batcher's await
                "convert back": 2 + 1,
            }
        ),
        200: Counter({"model (ORT run)": 36, "batcher": 4}),  # padding on the model thread
        300: Counter({"other": 9}),  # the store watcher's thread
        400: Counter({"other": 1}),
    }
    assert (
        layer_of("Handle._run (asyncio/events.py:80);_call_set_state (asyncio/futures.py:391)") == "transport"
    )
    assert (
        layer_of("<module> (gateway/cli.py:100);Runner.run (asyncio/runners.py:118);x (y.py:1)")
        == "transport"
    )


def test_each_threads_cpu_is_shared_by_its_own_samples() -> None:
    """The watcher thread, runnable in 9 samples, used no CPU: it gets none; a thread with CPU
    and no samples (ORT's pool) is the native row."""
    cpu = attribute(parse_raw(RAW), {100: 0.5, 200: 1.0, 300: 0.0, 500: 0.25})
    assert cpu["model (ORT run)"] == pytest.approx(0.9)
    assert cpu["batcher"] == pytest.approx(0.1 + 0.5 * 3 / 51)
    assert cpu["transport"] == pytest.approx(0.5 * 35 / 51)
    assert cpu["other"] == 0.0 and cpu[NATIVE] == 0.25
    assert sum(cpu.values()) == pytest.approx(1.75)


def test_table_rows_and_the_serving_total() -> None:
    samples = {1: Counter({"model (ORT run)": 3, "transport": 1})}
    ms = {**dict.fromkeys(LAYERS, 0.0), "model (ORT run)": 1.5, "transport": 0.5, "core": 0.25}
    rows = {line.split(" | ")[0].strip("| *"): line for line in table(samples, ms)[2:]}
    assert set(rows) == {*LAYERS, "serving (all but model)"}
    assert rows["model (ORT run)"].endswith("| 3 | 75.0% | 1.500 |")
    assert rows["serving (all but model)"].endswith("| 1 | 25.0% | 0.750 |")
