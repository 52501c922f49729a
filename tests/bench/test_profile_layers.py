"""bench/profile_layers.py's reading of py-spy's raw output: each stack goes to one layer, the
innermost frame a rule names deciding. The stacks are shortened from a real profile of the
gateway (py-spy record -f raw)."""

from __future__ import annotations

from collections import Counter

from bench.profile_layers import LAYERS, layer_of, parse_raw, table

LOOP = (
    "<module> (gateway/cli.py:100);Runner.run (asyncio/runners.py:118);"
    "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)"
)
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
        "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:83);"
        "_WorkItem.run (concurrent/futures/thread.py:58);EncoderBatchers.batcher.<locals>.run "
        "(gateway/encoding.py:61);OnnxEncoder.run_batch (runtimes/onnx_encoder.py:96);"
        "InferenceSession.run (onnxruntime/capi/onnxruntime_inference_collection.py:287) 40",
        "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:83);"
        "EncoderBatchers.batcher.<locals>.run (gateway/encoding.py:60);pad_rows (runtimes/base.py:120) 2",
        "<module> (somewhere.py:1) 1",
        "Thread._bootstrap_inner (threading.py:1045);WorkerThread.run (anyio/_backends/_asyncio.py:1124) 9",
        "not a sample line",
    ]
)


def test_each_stack_goes_to_the_innermost_named_layer() -> None:
    """(The store watcher's thread, busy only to py-spy, is left out.)"""
    samples = parse_raw(RAW)
    assert samples == Counter(
        {
            "transport": 35,  # the loop's own select, and the access gate
            "parse / validate": 4,
            "tokenize": 6,
            "batcher": 3 + 2,  # the batcher's await; padding on the model thread
            "convert back": 2 + 1,
            "model (ORT run)": 40,
            "other": 1,
        }
    )
    assert layer_of(f"{LOOP};_call_set_state (asyncio/futures.py:391)") == "transport"
    assert (
        layer_of("<module> (gateway/cli.py:100);Runner.run (asyncio/runners.py:118);x (y.py:1)")
        == "transport"
    )


def test_table_shares_the_measured_cpu_by_samples() -> None:
    lines = table(Counter({"model (ORT run)": 3, "transport": 1}), cpu_ms_per_request=2.0)
    rows = {line.split(" | ")[0].strip("| *"): line for line in lines[2:]}
    assert set(rows) == {*LAYERS, "serving (all but model)"}
    assert rows["model (ORT run)"].endswith("| 75.0% | 1.500 |")
    assert rows["transport"].endswith("| 25.0% | 0.500 |")
    assert rows["serving (all but model)"].endswith("| 25.0% | 0.500 |")
