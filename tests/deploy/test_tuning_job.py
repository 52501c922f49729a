"""``taskgate k8s tune-job`` (the Job for a spec) and ``taskgate adapters publish`` (a tuned folder
into an adapter store): what they write, and the clear refusals. The Job run for real, its adapter
served by a running pod: tests/deploy/test_entrypoint.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters import tune_job
from adapters.store import AdapterStore
from gateway.cli import main
from tests.deploy import kube


def write_spec(folder: Path, **fields: Any) -> Path:
    spec = {"method": "classifier", "base_model": "minilm", "train": [{"text": "a", "label": "x"}], **fields}
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_the_printed_objects_are_the_rendered_ones_and_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    spec = write_spec(tmp_path, train="data/train.jsonl", validation=[{"text": "b", "label": "y"}])
    assert main(["k8s", "tune-job", str(spec), "--name", "My_Adapter.v2", "--cpus", "4"]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert objects == tune_job.render(spec, adapter="My_Adapter.v2", cpus=4)
    assert [e for obj in objects for e in kube.validation_errors(obj)] == []
    config_map, job = objects
    assert job["metadata"]["name"] == "tune-my-adapter-v2"  # a DNS-1123 name from the adapter's
    cluster_spec = json.loads(config_map["data"]["spec.json"])
    assert cluster_spec["base_model"] == "/mnt/shared/models/minilm"
    assert cluster_spec["train"] == "data/train.jsonl"  # relative to spec.json, laid out beside it
    items = job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["items"]
    assert {item["path"]: config_map["data"][item["key"]] for item in items}["data/train.jsonl"] == (
        '{"text": "a", "label": "x"}\n'
    )
    (tune,) = job["spec"]["template"]["spec"]["initContainers"]
    assert tune["args"][-2:] == ["--threads", "4"] and tune["resources"]["limits"]["cpu"] == "4"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base_model_path": "/models/minilm"}, "spec field 'base_model_path' names a local path"),
        ({"model_store": "model-store"}, "spec field 'model_store' names a local path"),
        ({"output_dir": "out"}, "spec field 'output_dir' names a local path"),
        ({"base_model": "../models/minilm"}, "spec field 'base_model' must be a model id"),
        ({"train": "../secret.jsonl"}, "'../secret.jsonl' leaves the spec's folder"),
        ({"train": "missing.jsonl"}, "spec field 'train': cannot read"),
        ({"train": "big.jsonl"}, "more than a ConfigMap holds; put the data on the claim"),
    ],
)
def test_a_spec_that_cannot_run_on_a_cluster_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fields: dict[str, Any], message: str
) -> None:
    (tmp_path / "big.jsonl").write_text('{"text": "' + "x" * 1_100_000 + '", "label": "x"}\n')
    spec = write_spec(tmp_path, **fields)
    assert main(["k8s", "tune-job", str(spec), "--name", "topics"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
    assert captured.err.startswith("taskgate k8s tune-job: error: ")


def test_data_on_the_claim_stays_where_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, train="/mnt/shared/data/train.jsonl", validation="/elsewhere/val.jsonl")
    config_map, _ = tune_job.render(spec, adapter="topics")
    assert json.loads(config_map["data"]["spec.json"])["train"] == "/mnt/shared/data/train.jsonl"
    assert list(config_map["data"]) == ["spec.json"]
    assert "validation /elsewhere/val.jsonl must exist in the pod" in capsys.readouterr().err


def tuned_folder(folder: Path) -> Path:
    """What `taskgate tune` writes for a classifier (weights stand in: publishing never loads them)."""
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "adapter_config.json").write_text("{}")
    (folder / "labels.json").write_text('{"labels": ["billing", "technical"]}')
    about = {"method": "classifier", "base_model": "minilm", "labels": ["billing", "technical"],
             "metrics": {"val_accuracy": 1.0, "steps": 20}}  # fmt: skip
    (folder / "tuning.json").write_text(json.dumps(about))
    return folder


def test_publish_makes_the_next_version_current(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tuned_folder(tmp_path / "out")
    store = tmp_path / "store"
    args = ["adapters", "publish", str(folder), "--name", "topics", "--model-store", str(store)]
    assert main([*args, "--job-id", "tune-topics"]) == 0
    assert main([*args, "--base-model", "minilm-v2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"published topics@1 (base model minilm, classifier) in {store / '.adapters'}",
        f"published topics@2 (base model minilm-v2, classifier) in {store / '.adapters'}",
    ]
    adapters = AdapterStore(store / ".adapters")
    first, current = adapters.get("topics@1"), adapters.get("topics")
    assert (first.job_id, first.metrics) == ("tune-topics", {"val_accuracy": 1.0, "steps": 20.0})
    assert first.extra["labels"] == ["billing", "technical"]  # what serving reads, as a job's
    assert (current.version, current.base_model) == (2, "minilm-v2")
    current.verify()


@pytest.mark.parametrize(
    ("break_it", "extra_args", "message"),
    [
        (lambda f: (f / "tuning.json").unlink(), [], "holds no tuning.json: publish the folder"),
        (lambda f: (f / "tuning.json").write_text("{}"), [], "tuning.json names no tuning method"),
        (lambda f: (f / "model.bin").write_bytes(b"pickle"), [], "model.bin: refused"),
        (lambda f: shutil.rmtree(f), [], "is not a folder"),
        (lambda f: None, ["--name", "../up"], "invalid adapter name '../up'"),
    ],
)  # fmt: skip
def test_publish_refuses_with_the_reason_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], break_it: Any, extra_args: list[str], message: str
) -> None:
    folder = tuned_folder(tmp_path / "out")
    break_it(folder)
    store = tmp_path / "adapters"
    args = [
        "adapters",
        "publish",
        str(folder),
        "--name",
        "topics",
        "--adapter-store",
        str(store),
        *extra_args,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("taskgate adapters publish: error: ") and message in err, err
    assert not store.exists() or AdapterStore(store).names() == []


def test_publish_needs_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKGATE_MODEL_STORE", raising=False)
    assert main(["adapters", "publish", str(tuned_folder(tmp_path / "out")), "--name", "topics"]) == 2
    assert "name the store: --adapter-store DIR or --model-store DIR" in capsys.readouterr().err
