"""ONNX Runtime GenAI peer for bench/generation.py; runs in bench/.venv-genai (bench/peers/setup.sh genai).

    python genai_worker.py build --hf FOLDER --out DIR --precision int4|fp32 --cache DIR [--option K=V ...]
    python genai_worker.py measure --model DIR --mode engine|static --work JSON --threads 2
    python genai_worker.py answer --model DIR --prompt TEXT --tokens 32
    python genai_worker.py roundtrip --model DIR --text TEXT

``build`` runs onnxruntime_genai's model builder on a Hugging Face folder (the gateway's own
GGUF conversion), applies the ByteLevel decoder fix to its tokenizer.json (genai_tokenizer.py) and
stamps the folder; a folder whose stamp matches is reused. ``--option`` adds builder extra options
(the gateway's own mix, so ORT GenAI can run the very graph Taskgate builds). ``measure`` reads
``{"tokens", "repeats", "streams": {N: [prompt, ...]}}`` and prints one JSON line
``{N: {"tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "short"}}`` (medians over the repeats):
``engine`` submits all N prompts to ORT GenAI's Engine (its continuous-batching scheduler) at once;
``static`` runs them as one right-padded batch of N through og.Generator. Both greedy, with
exactly ``tokens`` new tokens per prompt (end-of-sequence masked until then), ORT intra-op threads
``--threads``. Nothing here imports Taskgate: this venv has its own transformers and torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from genai_tokenizer import fix_tokenizer_file

STAMP = "taskgate-peer-stamp.json"
PAD_ID = 0  # <|endoftext|>: never in a chat prompt (the config's pad id, 2, is <|im_end|>, which is)


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


# -- build ---------------------------------------------------------------------------------
def build(hf: Path, out: Path, precision: str, cache: Path, options: list[str]) -> None:
    import onnxruntime_genai as og

    source = hf / "fingerprint.json"
    expected = {
        "source": json.loads(source.read_text()) if source.is_file() else str(hf),
        "precision": precision,
        "onnxruntime_genai": og.__version__,
    }
    if options:
        expected["options"] = options
    stamp = out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == expected:
        print(json.dumps({"built": False, "model": str(out)}))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    log = out.parent / f"{out.name}.build.log"
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(staging),
        "-p", precision, "-e", "cpu", "-c", str(cache), "--extra_options", "hf_token=false", *options,
    ]  # fmt: skip
    try:
        with log.open("w") as sink:
            done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the model builder failed ({done.returncode}); see {log}")
        fixed = fix_tokenizer_file(staging / "tokenizer.json")
        (staging / STAMP).write_text(json.dumps(expected, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(json.dumps({"built": True, "model": str(out), "tokenizer_fixed": fixed}))


# -- measure -------------------------------------------------------------------------------
def load(model_dir: Path, threads: int, engine_batch: int = 0, max_length: int = 0) -> tuple[Any, Any]:
    """Model and tokenizer; ``engine_batch`` > 0 lets the Engine hold that many requests at once,
    each with a KV cache of ``max_length`` positions (the config's is the model's 8192)."""
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    overlay: dict[str, Any] = {"model": {"pad_token_id": PAD_ID, "decoder": {"session_options": options}}}
    if engine_batch:
        # The CPU model (no paged attention) runs the Engine on static batch slots, 4 by default:
        # as many as the most concurrent streams, so no request waits for a slot.
        overlay["engine"] = {"static_batching": {"max_batch_size": engine_batch}}
        overlay["search"] = {"max_length": max_length}  # as og.Generator's: prompt + new tokens
    config.overlay(json.dumps(overlay))
    model = og.Model(config)
    return model, og.Tokenizer(model)


def run_static(model: Any, tokenizer: Any, texts: list[str], tokens: int) -> tuple[float, list[float], int]:
    """One right-padded batch of all prompts: (wall s, TTFT ms per prompt, short prompts)."""
    import numpy as np
    import onnxruntime_genai as og

    rows = [tokenizer.encode(t) for t in texts]
    width = max(len(r) for r in rows)
    batch = np.full((len(rows), width), PAD_ID, dtype=np.int32)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    start = time.perf_counter()
    params = og.GeneratorParams(model)
    total = width + tokens  # every row: exactly `tokens` new tokens after the padded prompt
    params.set_search_options(max_length=total, min_length=total, do_sample=False, batch_size=len(rows))
    generator = og.Generator(model, params)
    generator.append_tokens(batch)
    steps, first = 0, 0.0
    while not generator.is_done():
        generator.generate_next_token()
        steps += 1
        if steps == 1:
            first = (time.perf_counter() - start) * 1000
    wall = time.perf_counter() - start
    short = sum(len(generator.get_sequence(i)) - width != tokens for i in range(len(rows)))
    return wall, [first] * len(rows), short


def run_engine(engine: Any, tokenizer: Any, texts: list[str], tokens: int) -> tuple[float, list[float], int]:
    """All prompts submitted to the Engine at once: (wall s, TTFT ms per prompt, short prompts)."""
    import numpy as np
    import onnxruntime_genai as og

    token_flag, failed_flag = og.EngineEventFlags.TOKEN.value, og.EngineEventFlags.FAILED.value
    buffer = engine.create_event_buffer(256)
    encoded = [np.asarray(tokenizer.encode(t), dtype=np.int32) for t in texts]
    start = time.perf_counter()
    requests = []
    for ids in encoded:
        request = engine.create_request()
        options = og.TurnOptions(request)
        options.set_do_sample(False)
        options.set_max_generated_tokens(tokens)
        options.set_min_generated_tokens(tokens)
        request.begin_turn(ids, options)
        requests.append(request)
    index = {id(r): i for i, r in enumerate(requests)}
    counts, ttft = [0] * len(requests), [float("nan")] * len(requests)
    while engine.has_pending_requests():
        for event in engine.run(buffer):
            flags = event.flags.value
            if flags & failed_flag:
                raise RuntimeError(f"ORT GenAI engine failed a request: {event.error_code}")
            if flags & token_flag:
                i = index[id(event.request)]
                if counts[i] == 0:
                    ttft[i] = (time.perf_counter() - start) * 1000
                counts[i] += 1
    wall = time.perf_counter() - start
    for request in requests:
        request.close()
    return wall, ttft, sum(c != tokens for c in counts)


def measure(model_dir: Path, mode: str, work: dict[str, Any], threads: int) -> None:
    import onnxruntime_genai as og

    tokens, repeats = int(work["tokens"]), int(work["repeats"])
    most = max(len(texts) for texts in work["streams"].values())
    # characters bound tokens from above (every token spells at least one character)
    longest = max(len(text) for texts in work["streams"].values() for text in texts)
    engine_batch = most if mode == "engine" else 0
    model, tokenizer = load(model_dir, threads, engine_batch=engine_batch, max_length=longest + tokens)
    engine = og.Engine(model) if mode == "engine" else None
    if engine is not None:
        slots = engine.get_capabilities().configured_max_batch_size
        print(f"ORT GenAI Engine: {slots} batch slots", file=sys.stderr, flush=True)

    def once(texts: list[str], n_tokens: int) -> tuple[float, list[float], int]:
        if engine is not None:
            return run_engine(engine, tokenizer, texts, n_tokens)
        return run_static(model, tokenizer, texts, n_tokens)

    first = next(iter(work["streams"].values()))
    once(first[:2], 8)  # warm up
    results: dict[str, dict[str, float]] = {}
    for n, texts in work["streams"].items():
        runs, short = [], 0
        for _ in range(repeats):
            wall, ttfts, missing = once(texts, tokens)
            short += missing
            runs.append((len(texts) * tokens / wall, quantile(ttfts, 0.5), quantile(ttfts, 0.99)))
        tps, p50, p99 = (statistics.median(column) for column in zip(*runs, strict=True))
        results[n] = {"tokens_per_s": tps, "ttft_p50_ms": p50, "ttft_p99_ms": p99, "short": short}
        print(f"ORT GenAI {mode} N={n}: {tps:.1f} tok/s", file=sys.stderr, flush=True)
    print(json.dumps(results))


def answer(model_dir: Path, prompt: str, tokens: int, threads: int) -> None:
    """The greedy answer to ``prompt`` (stopping at end-of-sequence), as JSON."""
    import onnxruntime_genai as og

    model, tokenizer = load(model_dir, threads)
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    new = generator.get_sequence(0)[len(ids) :]
    print(json.dumps({"answer": tokenizer.decode(new)}))


def roundtrip(model_dir: Path, text: str) -> None:
    """ORT GenAI's tokenizer on ``text``: its ids and their decoding, as JSON."""
    _, tokenizer = load(model_dir, 1)
    ids = tokenizer.encode(text)
    print(json.dumps({"ids": [int(i) for i in ids], "text": tokenizer.decode(ids)}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build")
    p.add_argument("--hf", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--precision", choices=["int4", "fp32"], required=True)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--option", action="append", default=[], help="a builder extra option, K=V")
    p = sub.add_parser("measure")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--mode", choices=["engine", "static"], required=True)
    p.add_argument("--work", type=Path, required=True, help="JSON file: tokens, repeats, streams")
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("answer")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p = sub.add_parser("roundtrip")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--text", required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command == "build":
        build(args.hf, args.out, args.precision, args.cache, args.option)
    elif args.command == "measure":
        measure(args.model, args.mode, json.loads(args.work.read_text()), args.threads)
    elif args.command == "answer":
        answer(args.model, args.prompt, args.tokens, args.threads)
    else:
        roundtrip(args.model, args.text)


if __name__ == "__main__":
    main()
