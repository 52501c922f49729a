"""CPU generation peers for bench/generation.py --peers: llama.cpp and ONNX Runtime GenAI.

In the same run, after the Taskgate rows (so nothing shares the cores), on the same model and the
same prompts, greedy, exactly --tokens new tokens per stream:

- llama.cpp: llama-cpp-python's OpenAI-compatible server (bench/.venv-llamacpp) on the very GGUF
  file Taskgate serves (SmolLM2-135M-Instruct.Q4_1.gguf), 2 threads; N concurrent streamed
  /v1/completions with the chat-templated prompt as text (so no server-side template or system
  prompt differs), temperature 0, end-of-generation tokens biased off so each stream runs to
  max_tokens, as Taskgate's min_new_tokens = max_new_tokens does.
- ONNX Runtime GenAI (bench/.venv-genai): int4 and fp32 models from its model builder, built from
  the gateway's own GGUF -> HF conversion into bench/.stores/generation-peers/ (cached), with
  the ByteLevel decoder fix (bench/peers/genai_tokenizer.py); measured through its Engine
  (continuous batching) and as a static batch of N (og.Generator), 2 intra-op threads. Its Engine
  also runs the very graph Taskgate serves (the builder with the gateway's options for its
  precision, ``runtimes.genai_graph.BUILDER_OPTIONS``; not the lm_head edit, which ORT GenAI does
  not feed): Taskgate / that row compares the two engines on one graph, apart from the choice of
  quantization mix (the builder's default all-4-bit graph is faster and loses probe facts that the
  gateway's mix keeps, runtimes.genai_graph).

Each peer also answers the fixed question greedily (QUESTION; right when it says EXPECTED): a
quantized model can answer nonsense. A peer whose venv is missing gets a "not installed: <how>"
row, never figures.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stores import store_path
from bench.systems import process, wait_for_line

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / "peers"
GENAI_PYTHON = ROOT / "bench" / ".venv-genai" / "bin" / "python"
LLAMA_PYTHON = ROOT / "bench" / ".venv-llamacpp" / "bin" / "python"
PEER_STORE = store_path("generation-peers")
THREADS = 2  # each peer gets both cores (as the earlier measurements did)
QUESTION = "What is the capital of France?"
EXPECTED = "Paris"
ANSWER_TOKENS = 32
EOG_IDS = (0, 2)  # SmolLM2's <|endoftext|> and <|im_end|>: llama.cpp ends a generation on either
TASKGATE_GRAPH = "taskgate-"  # genai_model's prefix: the graph Taskgate builds for a precision
INSTALL = {
    "genai": "bash bench/peers/setup.sh genai",
    "llamacpp": "bash bench/peers/setup.sh llamacpp",
}


def chat_prompt(question: str) -> str:
    """The same chat template as bench/generation.py's prompts (no system prompt)."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


# -- results -------------------------------------------------------------------------------
@dataclass
class Cell:
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    short: int = 0  # streams that did not get exactly --tokens tokens (all runs)


@dataclass
class System:
    name: str
    detail: str
    cells: dict[int, Cell] = field(default_factory=dict)
    answer: str | None = None
    missing: str | None = None  # set instead of figures: "not installed: <how>" or what failed
    same_graph: bool = False  # a peer engine on the graph Taskgate serves (not its own default)

    @property
    def answer_ok(self) -> bool | None:
        return None if self.answer is None else EXPECTED.lower() in self.answer.lower()


def fastest(peers: Sequence[System], streams: int) -> System | None:
    """The peer with the most tokens/s at ``streams`` (peers without figures are skipped)."""
    measured = [p for p in peers if streams in p.cells]
    return max(measured, key=lambda p: p.cells[streams].tokens_per_s, default=None)


def ratio_vs_fastest(ours: System, peers: Sequence[System], streams: int) -> tuple[float, System] | None:
    """Taskgate's tokens/s / the fastest peer's at ``streams``; None when either has no figure."""
    best = fastest(peers, streams)
    if best is None or streams not in ours.cells or not best.cells[streams].tokens_per_s:
        return None
    return ours.cells[streams].tokens_per_s / best.cells[streams].tokens_per_s, best


def table(ours: System, peers: Sequence[System], concurrency: Sequence[int]) -> str:
    """One markdown table, Taskgate first, then every peer; ratios to the fastest peer below it."""
    head = ["system", *(f"tok/s N={n}" for n in concurrency)]
    head += [*(f"TTFT p50 / p99 ms N={n}" for n in concurrency), "greedy answer", "setup"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system in (ours, *peers):
        if system.missing is not None:
            blanks = [""] * (2 * len(concurrency) + 1)
            lines.append(f"| {system.name} | {system.missing} | " + " | ".join(blanks) + " |")
            continue
        rates = [f"{system.cells[n].tokens_per_s:.1f}" if n in system.cells else "-" for n in concurrency]
        ttfts = [
            f"{system.cells[n].ttft_p50_ms:.0f} / {system.cells[n].ttft_p99_ms:.0f}"
            if n in system.cells
            else "-"
            for n in concurrency
        ]
        verdict = {None: "-", True: "right", False: "WRONG"}[system.answer_ok]
        said = "" if system.answer is None else f": {_cell_text(system.answer)}"
        lines.append(
            f"| {system.name} | " + " | ".join([*rates, *ttfts, verdict + said, system.detail]) + " |"
        )
    lines.append("")
    for n in sorted({min(concurrency), max(concurrency)}):
        found = ratio_vs_fastest(ours, peers, n)
        if found is None:
            lines.append(f"- Taskgate / fastest peer at N={n}: no peer measured")
        else:
            value, best = found
            lines.append(f"- Taskgate / fastest peer at N={n}: {value:.3f} (fastest: {best.name})")
        for peer in peers:
            if peer.same_graph and n in peer.cells and n in ours.cells and peer.cells[n].tokens_per_s:
                value = ours.cells[n].tokens_per_s / peer.cells[n].tokens_per_s
                lines.append(f"- Taskgate / {peer.name} (the same graph) at N={n}: {value:.3f}")
    for system in (ours, *peers):
        if short := sum(c.short for c in system.cells.values()):
            lines.append(f"- {system.name}: {short} stream(s) ended short of the requested tokens")
    return "\n".join(lines) + "\n"


def _cell_text(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def venv_imports(python: Path, module: str) -> bool:
    if not python.is_file():
        return False
    done = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, check=False)
    return done.returncode == 0


# -- llama.cpp -----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _llama_stream(client: Any, text: str, tokens: int) -> tuple[int, float, float]:
    """One streamed greedy completion: (tokens, TTFT ms, finish time)."""
    body = {
        "prompt": text, "max_tokens": tokens, "temperature": 0.0, "stream": True,
        "logit_bias": {str(i): -100.0 for i in EOG_IDS},
    }  # fmt: skip
    start = time.perf_counter()
    ttft, chunks, reason = float("nan"), 0, None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if not choices:
                continue
            if chunks == 0:
                ttft = (time.perf_counter() - start) * 1000
            chunks += 1
            reason = choices[0].get("finish_reason") or reason
    # one chunk per token, except that a partial UTF-8 character is held back and sent with the
    # next: a stream that ran to max_tokens ("length") made exactly `tokens`
    return (tokens if reason == "length" else chunks), ttft, time.perf_counter()


async def _llama_measure(url: str, streams: dict[int, list[str]], tokens: int, repeats: int) -> System:
    import httpx

    system = System("llama.cpp server", f"llama-cpp-python server, Q4_1 GGUF, {THREADS} threads")
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await asyncio.gather(*(_llama_stream(client, t, 8) for t in next(iter(streams.values()))[:2]))
        for n, texts in streams.items():
            runs, short = [], 0
            for _ in range(repeats):
                start = time.perf_counter()
                done = await asyncio.gather(*(_llama_stream(client, t, tokens) for t in texts))
                wall = max(d[2] for d in done) - start
                short += sum(d[0] != tokens for d in done)
                ttfts = [d[1] for d in done]
                runs.append((sum(d[0] for d in done) / wall, quantile(ttfts, 0.5), quantile(ttfts, 0.99)))
            tps, p50, p99 = (statistics.median(column) for column in zip(*runs, strict=True))
            system.cells[n] = Cell(tps, p50, p99, short)
            print(f"llama.cpp N={n}: {tps:.1f} tok/s, TTFT p50 {p50:.0f} ms", flush=True)
        body = {"prompt": chat_prompt(QUESTION), "max_tokens": ANSWER_TOKENS, "temperature": 0.0}
        reply = await client.post("/v1/completions", json=body)
        reply.raise_for_status()
        system.answer = reply.json()["choices"][0]["text"]
    return system


def llama_cpp(gguf: Path, streams: dict[int, list[str]], tokens: int, repeats: int) -> System:
    if not venv_imports(LLAMA_PYTHON, "llama_cpp.server"):
        return System("llama.cpp server", "", missing=f"not installed: {INSTALL['llamacpp']}")
    port = _free_port()
    command = [
        str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
        "--port", str(port), "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS),
        "--n_ctx", "4096", "--chat_format", "chatml",
        "--interrupt_requests", "false",  # its default ends a running stream when another arrives
    ]  # fmt: skip
    with process(command) as proc:
        wait_for_line(proc, r"Uvicorn running on", timeout_s=300)
        return asyncio.run(_llama_measure(f"http://127.0.0.1:{port}", streams, tokens, repeats))


# -- ONNX Runtime GenAI --------------------------------------------------------------------
def _genai(*args: str) -> dict[str, Any]:
    """Run bench/peers/genai_worker.py in the ORT GenAI venv; its last stdout line is JSON."""
    command = [str(GENAI_PYTHON), str(PEERS_DIR / "genai_worker.py"), *args]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"genai_worker {args[0]} failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def genai_model(hf_folder: Path, precision: str, store: Path = PEER_STORE) -> Path:
    """The ORT GenAI model built from ``hf_folder`` at ``precision`` (built once, then reused):
    a builder precision (int4, fp32), or ``taskgate-<p>``, the graph Taskgate builds for its
    precision ``p`` (the builder with the gateway's extra options)."""
    from runtimes import genai_graph

    out = store / f"ortgenai-{precision}"
    options: list[str] = []
    if precision.startswith(TASKGATE_GRAPH):
        ours = precision.removeprefix(TASKGATE_GRAPH)
        wanted = genai_graph.BUILDER_OPTIONS[ours]
        options = [f"--option={o}" for o in wanted if not o.startswith("hf_token=")]
        precision = genai_graph.builder_precision(ours)
    _genai("build", "--hf", str(hf_folder), "--out", str(out), "--precision", precision,
           "--cache", str(store / "builder-cache"), *options)  # fmt: skip
    return out


def ort_genai(
    hf_folder: Path,
    streams: dict[int, list[str]],
    tokens: int,
    repeats: int,
    taskgate_precision: str | None = None,
) -> list[System]:
    """ORT GenAI's rows; with ``taskgate_precision`` (Taskgate serves onnx-genai-causal-lm at that
    precision) also its Engine on the graph Taskgate builds for it."""
    variants = [("int4", "engine"), ("int4", "static"), ("fp32", "static")]
    label = {"engine": "Engine API (continuous batching)", "static": "static batch of N (og.Generator)"}
    names = [f"ORT GenAI {p} {'Engine' if m == 'engine' else 'static batch'}" for p, m in variants]
    ours = f"{TASKGATE_GRAPH}{taskgate_precision}"
    if taskgate_precision is not None:
        variants.append((ours, "engine"))
        names.append(f"ORT GenAI Engine on Taskgate's {taskgate_precision} graph")
    if not venv_imports(GENAI_PYTHON, "onnxruntime_genai"):
        return [System(name, "", missing=f"not installed: {INSTALL['genai']}") for name in names]
    work = {"tokens": tokens, "repeats": repeats, "streams": {str(n): t for n, t in streams.items()}}
    systems = []
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump(work, handle)
        handle.flush()
        answers: dict[str, str] = {}
        for (precision, mode), name in zip(variants, names, strict=True):
            model = genai_model(hf_folder, precision)
            cells = _genai("measure", "--model", str(model), "--mode", mode, "--work", handle.name,
                           "--threads", str(THREADS))  # fmt: skip
            if precision not in answers:
                prompt = chat_prompt(QUESTION)
                asked = _genai(
                    "answer", "--model", str(model), "--prompt", prompt, "--tokens", str(ANSWER_TOKENS)
                )
                answers[precision] = asked["answer"]
            detail = f"{label[mode]}, {THREADS} threads"
            system = System(name, detail, answer=answers[precision], same_graph=precision == ours)
            system.cells = {int(n): Cell(**c) for n, c in cells.items()}
            systems.append(system)
    return systems


# -- all peers -----------------------------------------------------------------------------
def run_peers(
    gguf: Path,
    hf_folder: Path,
    streams: dict[int, list[str]],
    tokens: int,
    repeats: int,
    taskgate_precision: str | None = None,
) -> list[System]:
    """Every peer, one after another (each alone on the cores); a peer that fails gets a row saying so."""
    peers: list[System] = []
    try:
        peers.append(llama_cpp(gguf, streams, tokens, repeats))
    except Exception as exc:  # a row that says what failed, and the other peers still run
        peers.append(System("llama.cpp server", "", missing=f"failed: {exc}"))
    try:
        peers.extend(ort_genai(hf_folder, streams, tokens, repeats, taskgate_precision))
    except Exception as exc:
        peers.append(System("ORT GenAI", "", missing=f"failed: {exc}"))
    return peers


def taskgate_system(rows: Sequence[Any], answer: str | None, detail: str) -> System:
    """Taskgate's row from bench/generation.py's rows (streams, tokens_per_s, ttft_*, short_streams)."""
    cells = {r.streams: Cell(r.tokens_per_s, r.ttft_p50_ms, r.ttft_p99_ms, r.short_streams) for r in rows}
    return System("Taskgate gateway (gRPC)", detail, cells=cells, answer=answer)


async def taskgate_answer(grpc_address: str, model: str) -> str:
    """The gateway's greedy answer to QUESTION (unary Caikit TextGenerationTaskPredict)."""
    import grpc

    from gateway.wire import caikit_runtime_nlp_pb2 as nlp
    from gateway.wire import caikit_runtime_nlp_pb2_grpc as nlp_grpc

    request = nlp.TextGenerationTaskRequest(
        text=chat_prompt(QUESTION), max_new_tokens=ANSWER_TOKENS, decoding_method="GREEDY"
    )
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = nlp_grpc.NlpServiceStub(channel)
        reply = await stub.TextGenerationTaskPredict(request, metadata=(("mm-model-id", model),))
    return str(reply.generated_text)


def write(stem: str, results: Path, ours: System, peers: list[System], concurrency: Sequence[int]) -> str:
    """The peers section (markdown), also written to ``results/<stem>-peers.{md,json}``."""
    text = "## Taskgate and the CPU generation peers\n\n" + table(ours, peers, concurrency)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}-peers.md").write_text(text)
    payload = {"question": QUESTION, "expected": EXPECTED, "systems": [asdict(s) for s in (ours, *peers)]}
    (results / f"{stem}-peers.json").write_text(json.dumps(payload, indent=2))
    return text


def section(
    args: Any, rows: Sequence[Any], streams: dict[int, list[str]], hf_folder: Path, model: str
) -> str:
    """bench/generation.py --peers: every peer, then the table with Taskgate's rows (and files)."""
    from gateway.models.store import ModelStore

    gguf = ModelStore(args.store).manifest(model).source
    precision = getattr(args, "taskgate_precision", None)
    if precision is not None:  # "auto": the graph the gateway chose (built by now)
        from runtimes import genai_graph

        precision = genai_graph.chosen_precision(Path(args.store) / model, precision)
    peers = run_peers(gguf, hf_folder, streams, args.tokens, args.repeats, precision)
    detail = (
        f"continuous batching, {getattr(args, 'runtime_name', 'its default runtime')}, "
        f"{getattr(args, 'generation_threads', args.intra_op_threads)} threads a step"
    )
    ours = taskgate_system(rows, getattr(args, "taskgate_answer", None), detail)
    return write(args.stem, ROOT / "bench" / "results", ours, peers, args.concurrency)
