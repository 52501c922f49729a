from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adapters.store import (
    AdapterNotFound,
    AdapterStore,
    AdapterStoreError,
    AdapterVersion,
    split_reference,
)


def _adapter_files(folder: Path, value: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.full((2, 2), value)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    return folder


def test_publish_versions_current_and_rollback(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "adapters")
    seen: list[str] = []
    store.subscribe(lambda version: seen.append(version.reference))
    first = store.publish(
        "facts", _adapter_files(tmp_path / "a", 1.0), base_model="SmolLM2", method="lora", job_id="j1"
    )
    second = store.publish(
        "facts",
        _adapter_files(tmp_path / "b", 2.0),
        base_model="SmolLM2",
        method="lora",
        metrics={"val_loss": 0.5},
    )
    assert (first.version, second.version) == (1, 2)
    assert [v.version for v in store.versions("facts")] == [1, 2]
    assert store.get("facts").version == 2 and store.get("facts@1").job_id == "j1"
    assert store.get("facts").metrics == {"val_loss": 0.5}
    assert set(second.files) == {"adapter_model.safetensors", "adapter_config.json"}
    second.verify()

    store.rollback("facts", 1)
    assert store.get("facts").version == 1
    assert seen == ["facts@1", "facts@2", "facts@1"]
    assert store.names() == ["facts"] and store.exists("facts") and not store.exists("other")


def test_a_version_is_complete_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AdapterStore(tmp_path / "adapters")
    store.publish("facts", _adapter_files(tmp_path / "a", 1.0), base_model="m", method="lora")

    def crash(*args: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError):
        store.publish("facts", _adapter_files(tmp_path / "b", 2.0), base_model="m", method="lora")
    monkeypatch.undo()
    assert [v.version for v in store.versions("facts")] == [1]
    assert store.get("facts").version == 1
    assert [p.name for p in (tmp_path / "adapters" / "facts").iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("bad", ["adapter_model.bin", "weights.pt", "state.pkl", "model.pickle", "x.py"])
def test_pickle_based_files_are_refused_without_being_opened(tmp_path: Path, bad: str) -> None:
    source = _adapter_files(tmp_path / "a", 1.0)
    os.mkfifo(source / bad)  # opening a FIFO for reading would block: refusing must not open it
    store = AdapterStore(tmp_path / "adapters")
    with pytest.raises(AdapterStoreError, match="safetensors weights, JSON configs and a README"):
        store.publish("facts", source, base_model="m", method="lora")
    assert not (tmp_path / "adapters" / "facts").exists()
    with pytest.raises(AdapterNotFound):
        store.get("facts")


def test_tampered_files_fail_verification(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "adapters")
    version = store.publish("facts", _adapter_files(tmp_path / "a", 1.0), base_model="m", method="lora")
    (version.folder / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterStoreError, match="sha256"):
        AdapterVersion.read(version.folder).verify()


@pytest.mark.parametrize("reference", ["", "../x", "a/b", "x@0", "x@-1", "x@abc", ".hidden", "x\n", "x@1@2"])
def test_bad_references_are_refused(tmp_path: Path, reference: str) -> None:
    store = AdapterStore(tmp_path / "adapters")
    with pytest.raises(AdapterStoreError):
        store.get(reference)


def test_references() -> None:
    assert split_reference("facts") == ("facts", None)
    assert split_reference("facts@12") == ("facts", 12)


def test_unknown_adapters_and_versions(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "adapters")
    with pytest.raises(AdapterNotFound):
        store.get("nothing")
    store.publish("facts", _adapter_files(tmp_path / "a", 1.0), base_model="m", method="lora")
    with pytest.raises(AdapterNotFound):
        store.get("facts@7")
    with pytest.raises(AdapterNotFound):
        store.rollback("facts", 3)
