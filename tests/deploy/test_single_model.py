"""Single-model mode (gateway/single_model.py): what KServe's storage initializer puts at
/mnt/models becomes one store entry served under the InferenceService's name, with nothing
written into the model folder. The real MiniLM folder and the real SmolLM2 GGUF file; the served
path (export into the store, answers over sockets) is tests/deploy/test_entrypoint.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import settings
from gateway.models.management import CLASSIFIER_TASKS, ENCODER_TASKS, GENERATION_TASKS
from gateway.models.single_model import SingleModelError, install_single_model, single_model_manifest
from gateway.models.store import ModelStore
from gateway.settings import SingleModelSettings
from runtimes.onnx_export import FINGERPRINT, _expected, export_cached
from tests.generation_models import smollm_gguf
from tests.models import ROOT, minilm_source


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under a folder with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def install(store: Path, model_dir: Path, name: str = "model", **options: object) -> Path:
    manifest = install_single_model(ModelStore(store), SingleModelSettings(model_dir, name, dict(options)))
    return manifest.folder


def config_only(folder: Path, architecture: str, model_type: str) -> Path:
    """A folder whose config.json is all the detection reads."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"architectures": [architecture], "model_type": model_type})
    )
    return folder


def test_a_bare_encoder_folder_serves_the_encoder_tasks_and_stays_untouched(tmp_path: Path) -> None:
    before = snapshot(minilm_source())
    folder = install(tmp_path / "store", minilm_source(), "minilm")
    manifest = ModelStore(tmp_path / "store").manifest("minilm")  # what the registry will read
    assert (manifest.runtime, manifest.tasks, manifest.source) == (
        "onnx-encoder",
        ENCODER_TASKS,
        minilm_source(),
    )
    assert manifest.folder == folder == tmp_path / "store" / "minilm"
    assert snapshot(minilm_source()) == before


@pytest.mark.parametrize(
    ("architecture", "model_type", "runtime", "tasks"),
    [
        ("BertForSequenceClassification", "bert", "onnx-encoder", CLASSIFIER_TASKS),
        ("LlamaForCausalLM", "llama", "onnx-causal-lm", GENERATION_TASKS),
    ],
)
def test_the_kind_comes_from_config_json(
    tmp_path: Path, architecture: str, model_type: str, runtime: str, tasks: frozenset[object]
) -> None:
    source = config_only(tmp_path / "hf", architecture, model_type)
    manifest = single_model_manifest(ModelStore(tmp_path / "store"), SingleModelSettings(source, "m"))
    assert (manifest.runtime, manifest.tasks, manifest.source) == (runtime, tasks, source)


def test_a_gguf_file_alone_or_in_its_folder_generates_text_with_the_settings_given(tmp_path: Path) -> None:
    folder = tmp_path / "mnt-models"
    folder.mkdir()
    (folder / smollm_gguf().name).symlink_to(smollm_gguf())
    store = ModelStore(tmp_path / "store")
    for model_dir, gguf in ((smollm_gguf(), smollm_gguf()), (folder, folder / smollm_gguf().name)):
        single = SingleModelSettings(model_dir, "smollm2", {"eos_token": "<|im_end|>", "max_batch_size": 8})
        manifest = single_model_manifest(store, single)
        assert (manifest.runtime, manifest.tasks, manifest.source) == (
            "onnx-causal-lm",
            GENERATION_TASKS,
            gguf,
        )
        assert manifest.settings == {"eos_token": "<|im_end|>", "max_batch_size": 8}


def test_a_taskgate_folder_keeps_its_manifest_under_the_new_name(tmp_path: Path) -> None:
    source = tmp_path / "mnt-models"
    shutil.copytree(minilm_source(), source / "hf")
    (source / "manifest.json").write_text(json.dumps({
        "id": "all-MiniLM-L6-v2", "tasks": ["embedding", "tokenization"], "runtime": "onnx-encoder",
        "source": "hf", "settings": {"max_tokens": 128}}))  # fmt: skip
    install(tmp_path / "store", source, "minilm", pinned=True)
    manifest = ModelStore(tmp_path / "store").manifest("minilm")
    assert manifest.model_id == "minilm" and manifest.source == source / "hf"
    assert {t.value for t in manifest.tasks} == {"embedding", "tokenization"}
    assert manifest.settings == {"max_tokens": 128, "pinned": True}  # the folder's, then the flag's


def test_an_export_shipped_in_the_folder_is_used_not_redone(tmp_path: Path) -> None:
    source = tmp_path / "mnt-models"
    shutil.copytree(minilm_source(), source / "hf")
    (source / "manifest.json").write_text(
        json.dumps({"tasks": ["embedding"], "runtime": "onnx-encoder", "source": "hf"})
    )
    shipped = source / "onnx-feature-extraction"
    shipped.mkdir()
    (shipped / "model.onnx").write_bytes(b"stand-in: only the fingerprint decides")
    (shipped / FINGERPRINT).write_text(json.dumps(_expected(source / "hf", "feature-extraction")))
    folder = install(tmp_path / "store", source, "minilm")
    linked = folder / "onnx-feature-extraction"
    assert linked.is_symlink() and linked.resolve() == shipped
    assert export_cached(source / "hf", folder, "feature-extraction") == linked  # no export ran
    install(tmp_path / "store", source, "minilm")  # a container restart: the link stays
    assert linked.resolve() == shipped


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (
            "missing",
            "does not exist: KServe's storage initializer puts the InferenceService's storageUri there",
        ),
        ("empty", "has neither a manifest.json, a config.json nor a .gguf file"),
        ("text-file", "is a file but not a .gguf file"),
        ("two-ggufs", "holds 2 .gguf files (a.gguf, b.gguf); serve one"),
        ("outside", "lies outside"),
        ("unknown-runtime", "unknown runtime 'onnx-magic'"),
        ("derived-runtime", "a manifest cannot name it"),
        ("bad-json", "cannot read manifest"),
    ],
)
def test_a_folder_that_cannot_be_served_says_why(tmp_path: Path, layout: str, message: str) -> None:
    source = tmp_path / "mnt-models"
    if layout != "missing":
        source.mkdir()
    if layout == "text-file":
        source = source / "notes.txt"
        source.write_text("hello")
    if layout == "two-ggufs":
        for name in ("a.gguf", "b.gguf"):
            (source / name).symlink_to(smollm_gguf())
    runtimes = {
        "outside": "onnx-encoder",
        "unknown-runtime": "onnx-magic",
        "derived-runtime": "torch-classifier",
    }
    if layout in runtimes:
        where = str(minilm_source()) if layout == "outside" else "."
        manifest = {"tasks": ["embedding"], "runtime": runtimes[layout], "source": where}
        (source / "manifest.json").write_text(json.dumps(manifest))
    if layout == "bad-json":
        (source / "manifest.json").write_text("{")
    with pytest.raises(SingleModelError) as caught:
        install(tmp_path / "store", source)
    assert message in str(caught.value)
    assert not (tmp_path / "store" / "model" / "manifest.json").exists()


def test_bad_model_settings_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SingleModelError, match=r"model settings for 'minilm': .*'max_batch_sise'"):
        install(tmp_path / "store", minilm_source(), "minilm", max_batch_sise=8)


def test_a_store_that_cannot_be_written_says_so(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("a file where the store should be")
    with pytest.raises(SingleModelError, match=r"model store \(TASKGATE_MODEL_STORE\) must be writable"):
        install(tmp_path / "store", minilm_source(), "minilm")


@pytest.mark.parametrize(
    ("argv", "env", "name"),
    [
        ([], {"INFERENCE_SERVICE_NAME": "isvc"}, "isvc"),  # what KServe sets in a predictor
        ([], {"INFERENCE_SERVICE_NAME": "isvc", "TASKGATE_MODEL_NAME": "named"}, "named"),
        (["--model-name", "flagged"], {"TASKGATE_MODEL_NAME": "named"}, "flagged"),
    ],
)
def test_the_name_is_the_inference_services_unless_given(
    argv: list[str], env: dict[str, str], name: str
) -> None:
    config = settings.parse(
        argv, environ={"TASKGATE_MODEL_DIR": "/mnt/models", "TASKGATE_PRELOAD": "x", **env}
    )
    assert config.single_model == SingleModelSettings(Path("/mnt/models"), name, {})
    assert config.preload == (name, "x")  # loaded before the servers open


def test_without_a_model_dir_there_is_no_single_model() -> None:
    config = settings.parse([], environ={"INFERENCE_SERVICE_NAME": "isvc"})
    assert config.single_model is None and config.preload == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {},
            "needs a model name: set TASKGATE_MODEL_NAME / --model-name (KServe sets INFERENCE_SERVICE_NAME)",
        ),
        ({"TASKGATE_MODEL_NAME": "../etc"}, "model name '../etc': use 1-128 letters"),
        (
            {"TASKGATE_MODEL_NAME": "m", "TASKGATE_MODEL_SETTINGS": "{"},
            "TASKGATE_MODEL_SETTINGS / --model-settings is not JSON",
        ),
        ({"TASKGATE_MODEL_NAME": "m", "TASKGATE_MODEL_SETTINGS": "[1]"}, "must be a JSON object"),
    ],
)
def test_bad_single_model_settings_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        settings.parse([], environ={"TASKGATE_MODEL_DIR": "/mnt/models", **env})
    assert message in str(caught.value)


def test_taskgate_serve_refuses_a_missing_model_folder_without_a_trace(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TASKGATE_MODEL_STORE": str(tmp_path / "store"),
        "TASKGATE_MODEL_DIR": str(tmp_path / "none"),
        "INFERENCE_SERVICE_NAME": "minilm",
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"taskgate serve: {tmp_path / 'none'} does not exist: KServe's storage initializer puts the "
        "InferenceService's storageUri there; check the storageUri (or TASKGATE_MODEL_DIR)"
    )
