"""bench/quantized.py's store: the default models and their quantized twins, seeded by hard links.

Fast: writes manifests and links files; no model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.quantized import ENCODERS, GENERATORS, prepare
from gateway.models.model_settings import check_settings
from gateway.models.store import ModelStore


def test_the_store_holds_each_default_model_and_its_quantized_twin(tmp_path: Path) -> None:
    store = tmp_path / "quantized"
    # a cached export of the default encoder (as a first run leaves it) seeds the twin's folder
    export = store / ENCODERS[0] / "onnx-feature-extraction"
    export.mkdir(parents=True)
    (export / "model.onnx").write_bytes(b"graph bytes")
    prepare(store)
    models = ModelStore(store)
    assert set(models.model_ids()) == {*ENCODERS, *GENERATORS}
    for fp32, twin, kind in ((ENCODERS[0], ENCODERS[1], "int8"), (GENERATORS[0], GENERATORS[1], "int4")):
        base, quantized = models.manifest(fp32), models.manifest(twin)
        assert quantized.source == base.source and quantized.runtime == base.runtime
        assert quantized.settings == {**base.settings, "quantization": kind}
        check_settings(quantized.runtime, quantized.settings)
    # fp32 and int4 on Optimum's export beside the shipped default on ORT GenAI's graph
    shipped = models.manifest(GENERATORS[2])
    assert (
        shipped.runtime == "onnx-genai-causal-lm"
        and models.manifest(GENERATORS[0]).runtime == "onnx-causal-lm"
    )
    assert models.manifest(GENERATORS[0]).source == shipped.source
    check_settings(shipped.runtime, shipped.settings)
    linked = store / ENCODERS[1] / "onnx-feature-extraction" / "model.onnx"
    assert os.path.samefile(linked, export / "model.onnx")
    prepare(store)  # a second run keeps what is there
    assert os.path.samefile(linked, export / "model.onnx")
