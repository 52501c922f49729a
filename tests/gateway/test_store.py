from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.errors import InvalidInput, ModelNotFound
from gateway.models.store import ManifestError, ModelManifest, ModelStore, validate_model_id
from gateway.tasks import Task


def _manifest(folder: Path, **fields: object) -> None:
    folder.mkdir(parents=True)
    data = {"id": folder.name, "tasks": ["embedding"], "runtime": "onnx-encoder", "source": "weights"}
    data.update(fields)
    (folder / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "/abs", "..", "a..b", ".hidden", "x" * 200])
def test_model_ids_never_become_unsafe_paths(bad: str) -> None:
    with pytest.raises(InvalidInput):
        validate_model_id(bad)


def test_relative_and_file_uri_sources(tmp_path: Path) -> None:
    _manifest(tmp_path / "rel")
    _manifest(tmp_path / "uri", source=(tmp_path / "elsewhere").as_uri())
    store = ModelStore(tmp_path)
    assert store.manifest("rel").source == tmp_path / "rel" / "weights"
    assert store.manifest("uri").source == tmp_path / "elsewhere"
    assert store.manifest("rel").tasks == frozenset({Task.EMBEDDING})
    assert store.model_ids() == ["rel", "uri"]


def test_unknown_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        ModelStore(tmp_path).manifest("absent")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tasks": ["summarize"]}, "unknown task 'summarize'"),
        ({"tasks": []}, "at least one task"),
        ({"id": "other"}, "differs from the folder name"),
        ({"source": "s3://bucket/x"}, "unsupported source scheme"),
        ({"runtime": 3}, "'runtime' must be a string"),
    ],
)
def test_bad_manifests_say_what_is_wrong(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    _manifest(tmp_path / "m", **fields)
    with pytest.raises(ManifestError, match=message):
        ModelStore(tmp_path).manifest("m")


def test_manifest_round_trip(tmp_path: Path) -> None:
    written = ModelManifest(
        model_id="m",
        tasks=frozenset({Task.RERANK, Task.EMBEDDING}),
        runtime="onnx-encoder",
        source=tmp_path / "src",
        folder=tmp_path / "m",
        settings={"max_tokens": 128},
    )
    written.write()
    assert ModelManifest.read(tmp_path / "m") == written
