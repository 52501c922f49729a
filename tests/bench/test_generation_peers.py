"""bench/generation_peers.py: the peers' table and ratios, and the ORT GenAI tokenizer fix.

The table tests run on small hand-made results. The tokenizer tests use SmolLM2's real
GGUF-converted tokenizer.json (the runtime's own conversion cache): the fix leaves Hugging Face's
decoding as it was, and in ORT GenAI (when bench/.venv-genai exists: bench/peers/setup.sh genai) a
model built by its model builder with that tokenizer encodes and decodes a sentence exactly only
with the fix.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tokenizers import Tokenizer

import bench.generation_peers as peers_module
from bench.generation_peers import (
    GENAI_PYTHON,
    LLAMA_PYTHON,
    PEERS_DIR,
    Cell,
    System,
    chat_prompt,
    fastest,
    llama_cpp,
    ort_genai,
    ratio_vs_fastest,
    table,
    venv_imports,
)
from bench.peers.genai_tokenizer import fix_tokenizer_file, needs_fix
from runtimes.gguf_convert import TokenizerFixes, convert_cached
from tests.generation_models import SMOLLM_SETTINGS, SMOLLM_WORK, smollm_gguf

SENTENCE = "The quick brown fox, naïve café owner, jumps over 2 lazy dogs.\nDone!"


def ours() -> System:
    cells = {1: Cell(20.0, 50.0, 60.0), 16: Cell(120.0, 400.0, 900.0)}
    return System("Taskgate", "continuous batching", cells=cells, answer="Paris is the capital.")


def peers() -> list[System]:
    return [
        System(
            "llama", "server", {1: Cell(40.0, 30, 35), 16: Cell(38.0, 2000, 9000, short=2)}, answer="Lyon"
        ),
        System("genai", "static", {1: Cell(25.0, 20, 20), 16: Cell(150.0, 300, 300)}, answer="Paris."),
        System("absent", "", missing="not installed: bash bench/peers/setup.sh llamacpp"),
    ]


def test_fastest_peer_is_chosen_per_concurrency_and_skips_missing_peers() -> None:
    found = fastest(peers(), 1)
    assert found is not None and found.name == "llama"
    found = fastest(peers(), 16)
    assert found is not None and found.name == "genai"
    assert fastest(peers()[2:], 1) is None


def test_ratio_is_taskgate_over_the_fastest_peer() -> None:
    one = ratio_vs_fastest(ours(), peers(), 1)
    sixteen = ratio_vs_fastest(ours(), peers(), 16)
    assert one is not None and one[0] == pytest.approx(0.5) and one[1].name == "llama"
    assert sixteen is not None and sixteen[0] == pytest.approx(0.8) and sixteen[1].name == "genai"
    assert ratio_vs_fastest(ours(), peers(), 4) is None  # nobody measured N=4
    assert ratio_vs_fastest(ours(), peers()[2:], 1) is None


def test_table_rows_ratios_answers_and_the_not_installed_row() -> None:
    text = table(ours(), peers(), [1, 4, 16])
    lines = text.splitlines()
    assert lines[0].startswith("| system | tok/s N=1 | tok/s N=4 | tok/s N=16 | TTFT p50 / p99 ms N=1")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    assert "| 20.0 | - | 120.0 | 50 / 60 | - | 400 / 900 | right: Paris is the capital." in rows["Taskgate"]
    assert "| 40.0 | - | 38.0 | 30 / 35 | - | 2000 / 9000 | WRONG: Lyon |" in rows["llama"]
    assert "| right: Paris. | static |" in rows["genai"]
    absent = rows["absent"]
    assert "| not installed: bash bench/peers/setup.sh llamacpp |" in absent
    assert absent.count("|") == lines[0].count("|")  # as many cells as the header: no figures
    assert "- Taskgate / fastest peer at N=1: 0.500 (fastest: llama)" in lines
    assert "- Taskgate / fastest peer at N=16: 0.800 (fastest: genai)" in lines
    assert "- llama: 2 stream(s) ended short of the requested tokens" in lines


def test_table_compares_taskgate_with_a_peer_on_its_own_graph() -> None:
    same = System("genai on ours", "engine", {1: Cell(16.0, 40, 40)}, answer="Paris.", same_graph=True)
    lines = table(ours(), [*peers(), same], [1, 16]).splitlines()
    assert "- Taskgate / genai on ours (the same graph) at N=1: 1.250" in lines
    assert not any("(the same graph) at N=16" in line for line in lines)  # no figure at 16 streams
    assert "- Taskgate / fastest peer at N=1: 0.500 (fastest: llama)" in lines


def test_table_says_when_no_peer_was_measured() -> None:
    text = table(ours(), peers()[2:], [1, 16])
    assert "- Taskgate / fastest peer at N=1: no peer measured" in text.splitlines()


def test_a_peer_without_its_venv_is_a_not_installed_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers_module, "LLAMA_PYTHON", tmp_path / "none" / "bin" / "python")
    monkeypatch.setattr(peers_module, "GENAI_PYTHON", tmp_path / "none" / "bin" / "python")
    streams = {1: [chat_prompt("Say hi")]}
    llama = llama_cpp(smollm_gguf(), streams, tokens=4, repeats=1)
    assert llama.missing == "not installed: bash bench/peers/setup.sh llamacpp" and not llama.cells
    genai = ort_genai(tmp_path, streams, tokens=4, repeats=1)
    assert [g.name for g in genai] == [
        "ORT GenAI int4 Engine",
        "ORT GenAI int4 static batch",
        "ORT GenAI fp32 static batch",
    ]
    genai = ort_genai(tmp_path, streams, tokens=4, repeats=1, taskgate_precision="int4")
    assert genai[-1].name == "ORT GenAI Engine on Taskgate's int4 graph"
    assert all(g.missing == "not installed: bash bench/peers/setup.sh genai" and not g.cells for g in genai)


@pytest.mark.skipif(
    not venv_imports(LLAMA_PYTHON, "llama_cpp.server"),
    reason="no bench/.venv-llamacpp (bench/peers/setup.sh llamacpp)",
)
def test_llama_cpp_server_streams_exactly_the_tokens_asked_and_answers() -> None:
    streams = {
        1: [chat_prompt("Say hi")],
        2: [chat_prompt("Why is the sky blue?"), chat_prompt("Count to ten.")],
    }
    system = llama_cpp(smollm_gguf(), streams, tokens=6, repeats=1)
    assert system.missing is None and set(system.cells) == {1, 2}
    for cell in system.cells.values():
        assert cell.short == 0 and cell.tokens_per_s > 0 and 0 < cell.ttft_p50_ms <= cell.ttft_p99_ms
    assert system.answer  # the greedy answer to QUESTION, right or not (the table says which)


@pytest.fixture(scope="module")
def gguf_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of SmolLM2's GGUF-converted tokenizer.json (converted here when no test did)."""
    folder = convert_cached(smollm_gguf(), SMOLLM_WORK, TokenizerFixes.from_options(SMOLLM_SETTINGS))
    copy = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    shutil.copy(folder / "tokenizer.json", copy)
    return copy


def test_fix_replaces_the_composite_decoder_and_keeps_hf_decoding(
    gguf_tokenizer: Path, tmp_path: Path
) -> None:
    original = json.loads(gguf_tokenizer.read_text())
    assert needs_fix(original) and original["decoder"]["type"] == "Sequence"
    fixed_path = tmp_path / "tokenizer.json"
    shutil.copy(gguf_tokenizer, fixed_path)
    assert fix_tokenizer_file(fixed_path) is True
    fixed = json.loads(fixed_path.read_text())
    assert fixed["decoder"]["type"] == "ByteLevel" and not needs_fix(fixed)
    assert {k: v for k, v in fixed.items() if k != "decoder"} == {
        k: v for k, v in original.items() if k != "decoder"
    }
    assert fix_tokenizer_file(fixed_path) is False  # already plain ByteLevel: left alone
    before, after = Tokenizer.from_file(str(gguf_tokenizer)), Tokenizer.from_file(str(fixed_path))
    ids = before.encode(SENTENCE).ids
    assert after.encode(SENTENCE).ids == ids
    assert after.decode(ids) == before.decode(ids) == SENTENCE


TINY_MODEL = """
import shutil, sys, torch
from pathlib import Path
from transformers import LlamaConfig, LlamaForCausalLM
out, tokenizer = Path(sys.argv[1]), Path(sys.argv[2])
torch.manual_seed(0)
config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                     bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
LlamaForCausalLM(config).save_pretrained(out)
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    if (tokenizer / name).is_file():
        shutil.copy(tokenizer / name, out / name)
"""


def _worker(*args: str) -> dict:
    command = [str(GENAI_PYTHON), str(PEERS_DIR / "genai_worker.py"), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not venv_imports(GENAI_PYTHON, "onnxruntime_genai"),
    reason="no bench/.venv-genai (bench/peers/setup.sh genai)",
)
def test_ort_genai_round_trips_a_sentence_only_with_the_bytelevel_fix(
    gguf_tokenizer: Path, tmp_path: Path
) -> None:
    folder = convert_cached(smollm_gguf(), SMOLLM_WORK, TokenizerFixes.from_options(SMOLLM_SETTINGS))
    hf = tmp_path / "tiny-hf"
    subprocess.run([str(GENAI_PYTHON), "-c", TINY_MODEL, str(hf), str(folder)], check=True, timeout=600)
    assert json.loads((hf / "tokenizer.json").read_text())["decoder"]["type"] == "Sequence"
    built = tmp_path / "tiny-genai"
    report = _worker(
        "build", "--hf", str(hf), "--out", str(built), "--precision", "fp32", "--cache", str(tmp_path / "c")
    )
    assert report["built"] is True and report["tokenizer_fixed"] is True
    fixed = _worker("roundtrip", "--model", str(built), "--text", SENTENCE)
    assert fixed["text"] == SENTENCE
    assert fixed["ids"] == Tokenizer.from_file(str(gguf_tokenizer)).encode(SENTENCE).ids  # the HF ids
    # the same model with the builder's own (composite-decoder) tokenizer.json: the bug the fix is for
    unfixed = tmp_path / "tiny-genai-unfixed"
    shutil.copytree(built, unfixed)
    shutil.copy(hf / "tokenizer.json", unfixed / "tokenizer.json")
    broken = _worker("roundtrip", "--model", str(unfixed), "--text", SENTENCE)
    assert -1 in broken["ids"] or broken["text"] != SENTENCE
    # a second build of the same source is the cached folder
    assert (
        _worker(
            "build",
            "--hf",
            str(hf),
            "--out",
            str(built),
            "--precision",
            "fp32",
            "--cache",
            str(tmp_path / "c"),
        )["built"]
        is False
    )
