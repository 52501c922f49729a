"""The ONNX encoder's one intra-op pool shared by the model workers (runtimes.onnx_encoder
.shared_pool_threads): its size, and batches from several threads at once on the real MiniLM
answering as they do one at a time."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from runtimes.base import ThreadSettings
from runtimes.onnx_encoder import OnnxEncoder, shared_pool_threads
from tests.models import minilm_source

CPUS = len(os.sched_getaffinity(0))
TEXTS = [f"sentence number {i} about {'cats' if i % 2 else 'markets'}" for i in range(24)]


@pytest.mark.parametrize(
    ("intra", "workers", "expected"),
    [
        (1, 1, 1),
        (1, 2, min(2, CPUS)),
        (2, 1, 2),  # what one call was given is never cut
        (1, 10_000, CPUS),  # never more than the CPUs this process may use
        (3, 10_000, max(3, CPUS)),
    ],
)
def test_pool_is_every_workers_threads_within_the_cpus(intra: int, workers: int, expected: int) -> None:
    assert shared_pool_threads(ThreadSettings(intra_op_threads=intra, model_workers=workers)) == expected


@pytest.fixture(scope="module")
def shared(store: Path) -> OnnxEncoder:
    runtime = OnnxEncoder(
        source=minilm_source(),
        work_dir=store / "all-MiniLM-L6-v2",
        options={},
        threads=ThreadSettings(intra_op_threads=1, model_workers=2),
    )
    runtime.load()
    return runtime


def test_session_has_the_shared_pool(shared: OnnxEncoder) -> None:
    options = shared._session.get_session_options()
    assert options.intra_op_num_threads == min(2, CPUS)


def test_concurrent_batches_on_the_shared_pool_equal_one_at_a_time(shared: OnnxEncoder) -> None:
    batches = [TEXTS[i : i + 6] for i in range(0, len(TEXTS), 6)]
    alone = [shared.run_batch(shared.tokenize(batch, None)) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            together = list(pool.map(lambda b: shared.run_batch(shared.tokenize(b, None)), batches))
            for one, other in zip(alone, together, strict=True):
                assert np.allclose(one, other, atol=1e-5)
