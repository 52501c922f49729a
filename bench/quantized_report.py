"""bench/quantized.py's report: the JSON as measured, and a Markdown table of the ratios."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.models.defaults import DEFAULT_EMBEDDING_MODEL, DEFAULT_GENERATION_MODEL

FP32_ENCODER, INT8_ENCODER = DEFAULT_EMBEDDING_MODEL, f"{DEFAULT_EMBEDDING_MODEL}-int8"
FP32_GENERATOR, INT4_GENERATOR = f"{DEFAULT_GENERATION_MODEL}-fp32", f"{DEFAULT_GENERATION_MODEL}-int4"
GENAI_GENERATOR = DEFAULT_GENERATION_MODEL  # the shipped default: ORT GenAI's int4 graph


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def markdown(result: dict[str, Any]) -> str:
    args = result["args"]
    lines = [
        "# Quantized variants through the gateway (bench/quantized.py)",
        "",
        f"Medians of {args['repeats']} runs; fp32 and the quantized twin alternate inside each run.",
    ]
    emb = result.get("embeddings")
    if emb:
        fp, q = emb[FP32_ENCODER], emb[INT8_ENCODER]
        lines += [
            "",
            f"## Embeddings (gRPC, {args['clients']} clients closed loop / 1 client, "
            f"{args['seconds']} s each)",
            "",
            f"| model | req/s at {args['clients']} clients | p50 ms at 1 client |",
            "|---|---|---|",
            f"| fp32 | {fp['req_per_s']:.0f} | {fp['p50_1_client_ms']:.2f} |",
            f"| int8 | {q['req_per_s']:.0f} | {q['p50_1_client_ms']:.2f} |",
            f"| int8 / fp32 | {_ratio(q['req_per_s'], fp['req_per_s'])} "
            f"| {_ratio(fp['p50_1_client_ms'], q['p50_1_client_ms'])} faster |",
        ]
    for threads, gen in sorted(result.get("generation", {}).items()):
        lines += [
            "",
            f"## Generation (gRPC streams, greedy, {args['tokens']} tokens each, "
            f"--intra-op-threads and --generation-threads {threads})",
            "",
            "fp32 and int4: Optimum's export (onnx-causal-lm) and our int4 variant of it; default: the "
            "shipped ORT GenAI int4 graph (onnx-genai-causal-lm).",
            "",
            "| streams | fp32 tok/s | int4 tok/s | default tok/s | int4 / fp32 | default / fp32 "
            "| fp32 TTFT p50 ms | int4 TTFT p50 ms | default TTFT p50 ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for n, fp in gen[FP32_GENERATOR].items():
            q, d = gen[INT4_GENERATOR][n], gen.get(GENAI_GENERATOR, {}).get(n)
            d = d or {"tokens_per_s": 0.0, "ttft_p50_ms": float("nan")}
            lines.append(
                f"| {n} | {fp['tokens_per_s']:.1f} | {q['tokens_per_s']:.1f} | {d['tokens_per_s']:.1f} "
                f"| {_ratio(q['tokens_per_s'], fp['tokens_per_s'])} "
                f"| {_ratio(d['tokens_per_s'], fp['tokens_per_s'])} "
                f"| {fp['ttft_p50_ms']:.0f} | {q['ttft_p50_ms']:.0f} | {d['ttft_p50_ms']:.0f} |"
            )
    lines += ["", "## Quality checks", ""]
    for model, check in sorted((result.get("checks") or {}).items()):
        report = (check or {}).get("report") or {}
        if "cosine_mean" in report:
            lines.append(
                f"- {model}: cosine to fp32 over {report['probe_sentences']} probe sentences, "
                f"mean {report['cosine_mean']:.4f}, worst {report['cosine_min']:.4f}"
            )
        elif "questions" in report:
            lines.append(f"- {model}: {report['verdict']}")
            lines += [
                f"  - {q['question']} fp32: {q['fp32_answer']!r} int4: {q['int4_answer']!r}"
                for q in report["questions"]
            ]
    for model, text in sorted((result.get("answers") or {}).items()):
        lines.append(f"- {model} answers 'What is the capital of France?' with the chat template: {text!r}")
    return "\n".join(lines) + "\n"


def write(folder: Path, stem: str, result: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    text = markdown(result)
    (folder / f"{stem}.md").write_text(text)
    print(text)
