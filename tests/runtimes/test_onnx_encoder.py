"""The ONNX Runtime encoder against the torch reference, on the real MiniLM."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from runtimes.base import ThreadSettings
from runtimes.onnx_encoder import InputTooLong, OnnxEncoder
from runtimes.onnx_export import FINGERPRINT, export_cached
from tests.models import CLASSIFIER, CLASSIFIER_LABELS, SOURCES, build_classifier, minilm_source

SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome and I loved every minute of it, even the credits.",
    "Rust and Python are programming languages.",
    "ok",
]


@pytest.fixture(scope="module")
def encoder(store: Path) -> OnnxEncoder:
    runtime = OnnxEncoder(
        source=minilm_source(), work_dir=store / "all-MiniLM-L6-v2", options={}, threads=ThreadSettings()
    )
    runtime.load()
    return runtime


def _torch_embeddings(texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_source()))
    model = AutoModel.from_pretrained(str(minilm_source())).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_embeddings_match_the_torch_reference(encoder: OnnxEncoder) -> None:
    ours = encoder.run_batch(encoder.tokenize(SENTENCES, None))
    reference = _torch_embeddings(SENTENCES)
    assert ours.shape == (4, 384)
    cosine = (ours * reference).sum(axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.999, cosine
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batched_rows_equal_single_rows(encoder: OnnxEncoder) -> None:
    batched = encoder.run_batch(encoder.tokenize(SENTENCES, None))
    for row, text in enumerate(SENTENCES):
        single = encoder.run_batch(encoder.tokenize([text], None))[0]
        assert np.allclose(batched[row], single, atol=1e-5)


def test_token_ids_match_the_transformers_tokenizer(encoder: OnnxEncoder) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(minilm_source()))
    batch = encoder.tokenize([SENTENCES[1]], None)
    assert batch.input_ids[0].tolist() == reference(SENTENCES[1])["input_ids"]


def test_over_long_input_is_refused_without_truncation(encoder: OnnxEncoder) -> None:
    long_text = "word " * 400
    with pytest.raises(InputTooLong, match="256"):
        encoder.tokenize([long_text], None)


def test_truncation_limits_tokens_including_special_tokens(encoder: OnnxEncoder) -> None:
    long_text = "word " * 400
    assert encoder.tokenize([long_text], 10).token_counts == (10,)
    assert encoder.tokenize([long_text], 256).token_counts == (256,)
    assert encoder.tokenize(["short text", long_text], 1000).token_counts == (4, 256)


def test_tokens_carry_character_offsets(encoder: OnnxEncoder) -> None:
    text = "Hello, wonderful world!"
    tokens = encoder.tokens(text)
    assert [t.text for t in tokens] == ["Hello", ",", "wonderful", "world", "!"]
    for token in tokens:
        assert text[token.start : token.end] == token.text


def test_classifier_matches_torch_and_has_its_labels(store: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = build_classifier(SOURCES / CLASSIFIER)
    runtime = OnnxEncoder(source=source, work_dir=store / CLASSIFIER, options={}, threads=ThreadSettings())
    runtime.load()
    assert runtime.head == "classification"
    assert runtime.labels == CLASSIFIER_LABELS
    probabilities = runtime.run_batch(runtime.tokenize(SENTENCES, None))
    model = AutoModelForSequenceClassification.from_pretrained(str(source)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    with torch.no_grad():
        logits = model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits
    assert np.allclose(probabilities, torch.softmax(logits, dim=1).numpy(), atol=1e-4)


def test_export_is_cached_and_redone_when_the_source_changes(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(SOURCES / "short-positions", source)
    first = export_cached(source, tmp_path / "work", "feature-extraction")
    stamp = (first / FINGERPRINT).stat().st_mtime_ns
    again = export_cached(source, tmp_path / "work", "feature-extraction")
    assert again == first and (again / FINGERPRINT).stat().st_mtime_ns == stamp
    (source / "vocab.txt").write_text((source / "vocab.txt").read_text() + "newtoken\n")
    redone = export_cached(source, tmp_path / "work", "feature-extraction")
    assert (redone / FINGERPRINT).stat().st_mtime_ns != stamp
    assert (redone / "model.onnx").is_file()
    assert not list((tmp_path / "work").glob(".onnx-*")), "staging folders must not be left behind"
