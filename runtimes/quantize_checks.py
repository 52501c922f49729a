"""Making quantized variants and measuring them against fp32: run in the export worker process.

``make_int8`` and ``make_int4`` write ``model.onnx`` (and the export's tokenizer and config files)
into a staging folder and return the report ``runtimes.quantize`` keeps and judges.

int8 check: cosine between fp32 and int8 embeddings, pooled as the runtime pools them, over
``PROBE_SENTENCES`` (short and long, several languages and scripts, numbers, code, odd spacing).
Dynamic quantization scales activations per tensor, so a row's result depends on the batch it
runs in: each sentence is measured alone and in one padded batch of all of them, and the report
gives the mean and the minimum over both.

int4 check: each of ``PROBE_QUESTIONS`` is asked with the model's chat template (its default
system prompt included, which is where quantized models have been seen to derail) and answered
greedily by fp32 and by int4, up to the eos token or ``PROBE_TOKENS`` tokens. The variant passes
when every question whose expected fact fp32's answer holds is answered with that fact by int4
too, and fp32 answers at least one (otherwise the probe cannot judge this model). A numeric fact
must be the answer's first number ("There are 30 days in a week, which is 30 x 7 = 180 days"
holds a 7 but states 30: an all-4-bit SmolLM2 graph answered so and passed a substring check).
How many of the first greedy tokens agree with fp32 is reported too, as information: int4 may
word the same fact differently. The loop feeds the graph exactly what ``OnnxCausalLM`` feeds it (input ids,
attention mask, position ids, past keys and values, logits and present outputs), so it also
proves the quantized graph keeps that layout.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.base import pad_rows
from runtimes.causal_graph import LOGITS_TO_KEEP, lm_head_name, materialize_lm_head
from runtimes.quantize import copy_beside

PROBE_SENTENCES = (
    "hi",
    "ok",
    "Hello world!",
    "The cat sat on the mat.",
    "A man is playing a guitar on stage.",
    "How do I reset my password?",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The quick brown fox jumps over the lazy dog.",
    "Please send the invoice to accounting by Friday.",
    "Is it going to rain tomorrow in Seattle?",
    "I absolutely loved this movie, the acting was superb!",
    "Terrible service, I will never come back.",
    "The mitochondria is the powerhouse of the cell.",
    "Order #48213 shipped on 2024-03-15 for $1,299.99.",
    "3.14159 2.71828 1.41421 1.73205",
    "Call me at +1 (555) 010-7788 before 9:30 pm.",
    "In 1969, Apollo 11 landed on the Moon with 3 astronauts.",
    "def add(a, b): return a + b",
    "SELECT name, email FROM users WHERE id = 42;",
    "https://example.com/search?q=onnx+runtime&page=2",
    "Le chat dort sur le canapé depuis ce matin.",
    "¿Dónde está la estación de tren más cercana?",
    "Der Zug nach Berlin hat zwanzig Minuten Verspätung.",
    "Il tempo oggi è bellissimo, andiamo al mare.",
    "Я люблю читать книги по вечерам.",
    "東京は日本の首都です。",
    "我今天早上喝了一杯咖啡。",
    "مرحبا، كيف حالك اليوم؟",
    "नमस्ते, आप कैसे हैं?",
    "emoji test 🙂🚀🔥 done",
    "   lots    of     spaces   and\ttabs\n\nand newlines   ",
    "ALL CAPS SENTENCE ABOUT A VERY LOUD MEETING",
    "a a a a a a a a a a a a a a a a a a a a",
    "Neural networks learn representations by adjusting weights through gradient descent, and "
    "modern transformers use attention to relate every token in a sequence to every other token.",
    "The committee reviewed the proposal in detail, raised concerns about the budget, asked for "
    "a revised timeline, and agreed to meet again next month to make a final decision.",
    "After hiking for six hours through dense forest and across two rivers, the group finally "
    "reached the summit, where the view of the valley below made every step worth it.",
    "Patients with type 2 diabetes are advised to monitor blood glucose, exercise regularly, "
    "eat a balanced diet rich in fiber, and take medication as prescribed by their physician.",
    "The contract shall terminate automatically if either party fails to perform its obligations "
    "within thirty (30) days after receiving written notice of such failure from the other party.",
    "Machine translation quality has improved dramatically over the last decade thanks to large "
    "parallel corpora, subword tokenization, and sequence-to-sequence models with attention. "
    "Still, rare words, idioms and long documents remain hard, and evaluation metrics such as "
    "BLEU correlate only loosely with human judgements of adequacy and fluency.",
    "Q: What is 17 times 23? A: 391.",
    "red green blue yellow purple orange",
    "Why is the sky blue?",
    "The Eiffel Tower is in Paris.",
    "Bananas are an excellent source of potassium.",
    "The meeting has been moved to Room 204, third floor.",
    "Water boils at 100 degrees Celsius at sea level.",
    "She whispered, 'don't tell anyone' -- and left.",
)
PROBE_QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("How many days are there in a week?", ("seven", "7")),
)
PROBE_TOKENS = 32


def make_int8(
    exported: Path, output: Path, settings: dict[str, Any], pooling: str, max_tokens: int
) -> dict[str, Any]:
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = getattr(AutoQuantizationConfig, settings["preset"])
    config = preset(
        is_static=False, per_channel=settings["per_channel"], operators_to_quantize=settings["operators"]
    )
    started = time.perf_counter()
    quantizer = ORTQuantizer.from_pretrained(str(exported), file_name="model.onnx")
    written = quantizer.quantize(save_dir=str(output), quantization_config=config)
    (Path(written) / "model_quantized.onnx").rename(output / "model.onnx")
    for leftover in output.iterdir():  # the quantizer also writes its config and a copy of ours
        if leftover.name != "model.onnx":
            leftover.unlink()
    copy_beside(exported, output)
    quantize_s = time.perf_counter() - started
    fp32 = _embeddings(exported / "model.onnx", exported, pooling, max_tokens)
    int8 = _embeddings(output / "model.onnx", exported, pooling, max_tokens)
    cosines = np.concatenate([_cosine(fp32[0], int8[0]), _cosine(fp32[1], int8[1])])
    return {
        "quantization": "int8",
        "preset": settings["preset"],
        "cosine_mean": round(float(cosines.mean()), 6),
        "cosine_min": round(float(cosines.min()), 6),
        "probe_sentences": len(PROBE_SENTENCES),
        "measured": "each sentence alone and all in one padded batch",
        "fp32_bytes": (exported / "model.onnx").stat().st_size,
        "quantized_bytes": (output / "model.onnx").stat().st_size,
        "quantize_seconds": round(quantize_s, 2),
    }


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _embeddings(model: Path, folder: Path, pooling: str, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(each sentence alone, all in one padded batch): pooled rows as the runtime pools them."""
    from runtimes.encoder_tokenizer import EncoderTokenizer

    tokenizer = EncoderTokenizer(folder, max_tokens)
    tokenizer.load()
    rows = [
        row for row in tokenizer.rows(list(PROBE_SENTENCES), max_tokens) if not isinstance(row, ValueError)
    ]
    session = _session(model)
    names = {i.name for i in session.get_inputs()}

    def run(batch_rows: list[Any]) -> np.ndarray:
        batch = pad_rows(batch_rows, tokenizer.pad_id)
        feeds = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        hidden = np.asarray(session.run(None, {k: v for k, v in feeds.items() if k in names})[0], np.float32)
        if pooling == "cls":
            return hidden[:, 0, :]
        weights = batch.attention_mask[:, :, None].astype(np.float32)
        return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)

    alone = np.concatenate([run([row]) for row in rows])
    return alone, run(rows)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
    result: np.ndarray = (a * b).sum(axis=1) / norms
    return result


def make_int4(
    exported: Path, output: Path, settings: dict[str, Any], eos_token: str | None
) -> dict[str, Any]:
    import onnx

    started = time.perf_counter()
    external = any(p.suffix in {".onnx_data", ".data"} for p in exported.iterdir())
    model = onnx.load(str(exported / "model.onnx"))
    quantize_int4(model, settings).save_model_to_file(
        str(output / "model.onnx"), use_external_data_format=external
    )
    del model
    copy_beside(exported, output)
    quantize_s = time.perf_counter() - started
    prompts, eos_id, tokenizer = chat_prompts(exported, eos_token)
    fp32 = _answers(exported / "model.onnx", prompts, eos_id)
    int4 = _answers(output / "model.onnx", prompts, eos_id)
    return {
        **judge_answers(tokenizer, fp32, int4),
        "fp32_bytes": sum(p.stat().st_size for p in exported.glob("model.onnx*")),
        "quantized_bytes": sum(p.stat().st_size for p in output.glob("model.onnx*")),
        "quantize_seconds": round(quantize_s, 2),
    }


def judge_answers(tokenizer: Any, fp32: list[list[int]], int4: list[list[int]]) -> dict[str, Any]:
    """The verdict on int4's greedy answers to PROBE_QUESTIONS against fp32's: it passes when it
    keeps the expected fact wherever fp32 has it (and fp32 has it at least once)."""
    questions = []
    for (question, facts), ref, got in zip(PROBE_QUESTIONS, fp32, int4, strict=True):
        ref_text, got_text = tokenizer.decode(ref), tokenizer.decode(got)
        agree = next(
            (i for i, (x, y) in enumerate(zip(ref, got, strict=False)) if x != y), min(len(ref), len(got))
        )
        questions.append(
            {
                "question": question,
                "expected": list(facts),
                "fp32_answer": ref_text,
                "int4_answer": got_text,
                "fp32_right": _holds(ref_text, facts),
                "int4_right": _holds(got_text, facts),
                "leading_tokens_equal": agree,
            }
        )
    judged = [q for q in questions if q["fp32_right"]]
    lost = [q["question"] for q in judged if not q["int4_right"]]
    if not judged:
        verdict = (
            "fp32 answers none of the probe questions with its expected fact, so the probe cannot judge int4"
        )
    elif lost:
        verdict = (
            f"int4 loses the expected fact on {len(lost)} of {len(judged)} questions "
            f"fp32 answers right: {lost}"
        )
    else:
        verdict = f"int4 keeps the expected fact on all {len(judged)} questions fp32 answers right"
    return {
        "quantization": "int4",
        "passed": bool(judged) and not lost,
        "verdict": verdict,
        "check": "greedy answers with the chat template hold the expected fact wherever fp32's do",
        "questions": questions,
    }


def quantize_int4(model: Any, settings: dict[str, Any]) -> Any:
    """The weight-only quantized model (onnxruntime's ONNXModel) of an fp32 causal-LM graph."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    def config(bits: int) -> Any:
        return DefaultWeightOnlyQuantConfig(
            block_size=settings["block_size"],
            is_symmetric=settings["is_symmetric"],
            accuracy_level=settings["accuracy_level"],
            bits=bits,
        )

    head_bits = int(settings.get("lm_head_bits") or 0)
    # lm_head reads the tied embedding through a Transpose: made a constant, it is quantized on
    # its own (8 bits: at 4 the probe lost a fact), the body at settings["bits"]
    head = lm_head_name(model) if head_bits and materialize_lm_head(model) else None
    quantizer = MatMulNBitsQuantizer(
        model, nodes_to_exclude=[head] if head else None, algo_config=config(settings["bits"])
    )
    quantizer.process()
    if head:
        quantizer = MatMulNBitsQuantizer(
            quantizer.model.model, nodes_to_include=[head], algo_config=config(head_bits)
        )
        quantizer.process()
    return quantizer.model


_NUMBER = re.compile(r"\b(?:\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)\b")


def _holds(text: str, facts: tuple[str, ...]) -> bool:
    """Whether ``text`` states one of ``facts``: a number as its first number, a word anywhere."""
    lowered = text.lower()
    wanted = {fact.lower() for fact in facts}
    if all(_NUMBER.fullmatch(fact) for fact in wanted):
        first = _NUMBER.search(lowered)
        return first is not None and first.group(0) in wanted
    return any(fact in lowered for fact in wanted)


def chat_prompts(folder: Path, eos_token: str | None) -> tuple[list[list[int]], int, Any]:
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))  # type: ignore[no-untyped-call]
    if eos_token is not None:
        tokenizer.eos_token = eos_token
    prompts = [
        list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True
            )
        )
        for q, _ in PROBE_QUESTIONS
    ]
    return prompts, int(tokenizer.eos_token_id), tokenizer


def _answers(model: Path, prompts: list[list[int]], eos_id: int) -> list[list[int]]:
    """Greedy answers, one prompt at a time, through the graph inputs OnnxCausalLM drives."""
    session = _session(model)
    inputs = {i.name: i for i in session.get_inputs()}
    past = [name for name in inputs if name.startswith("past_key_values.")]
    outputs = ["logits", *(name.replace("past_key_values.", "present.", 1) for name in past)]
    shape = inputs[past[0]].shape
    keep = {LOGITS_TO_KEEP: np.asarray([1], np.int64)} if LOGITS_TO_KEEP in inputs else {}
    answers = []
    for prompt in prompts:
        cache = [np.zeros((1, shape[1], 0, shape[3]), np.float32)] * len(past)
        ids = np.asarray([prompt], np.int64)
        positions = np.arange(len(prompt), dtype=np.int64)[None]
        answer: list[int] = []
        while len(answer) < PROBE_TOKENS:
            width = positions[0, -1] + 1
            feeds = {
                "input_ids": ids,
                "attention_mask": np.ones((1, width), np.int64),
                "position_ids": positions,
                **keep,
            }
            result = session.run(outputs, {**feeds, **dict(zip(past, cache, strict=True))})
            token = int(result[0][0, -1].argmax())
            if token == eos_id:
                break
            answer.append(token)
            cache = result[1:]
            ids = np.asarray([[token]], np.int64)
            positions = np.asarray([[width]], np.int64)
        answers.append(answer)
    return answers
