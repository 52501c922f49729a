"""A gateway of its own for each fuzz module, on a copy of the test store.

The fuzzers call everything a client can, deploys, undeploys and tuning jobs included, with the
real model ids among their choices: the session's store (a cache kept between runs) and the
session's gateway must not see that. The copy hard-links the large files (exports, weights), so
the models load from the exports the session's gateway made. The store's tuning state (``.jobs``,
``.adapters``, ``.files``, ``.datasets``: whatever another gateway left there) is not copied: the
fuzz gateway's jobs and adapters are its own and start empty, but for what ``seed_tuning`` puts
there so that the names the fuzzers steer to mean something: one finished job, one dataset, and
two published versions of a LoRA classifier adapter of MiniLM (``ADAPTER``, served by name like a
model, so it is among ``MODEL_IDS`` too).

Tuning jobs must not train for minutes while the fuzzers run. The fuzz gateway takes one job at
a time with one more queued (a third is refused, 429), with the smallest data (``MAX_TRAIN_RECORDS``
records) and its worker at the lowest priority; and every job a fuzzed request creates is
cancelled at once by ``JobReaper`` (over gRPC, Taskgate's ``CancelJob``, which does not wait),
so a started worker stops at its first check (after loading the base model), before any step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from adapters.jobs.store import JobState, JobStore
from adapters.store import AdapterStore
from gateway.models.defaults import DEFAULT_GENERATION_MODEL
from gateway.settings import TuningSettings
from gateway.wire import taskgate_tuning_pb2 as tuning_pb2
from gateway.wire import taskgate_tuning_pb2_grpc as tuning_grpc
from tests.conftest import GatewayThread, gateway_settings
from tests.models import CLASSIFIER, MINILM, MISSING_SOURCE, SHORT_POSITIONS, minilm_source

SERVED_MODELS = (MINILM, CLASSIFIER, SHORT_POSITIONS, DEFAULT_GENERATION_MODEL)
ADAPTER = "fuzz-adapter"  # a classifier adapter of MiniLM, versions 1 and 2, in each fuzz store
MODEL_IDS = (*SERVED_MODELS, MISSING_SOURCE, ADAPTER)
GENERATION_MODEL = DEFAULT_GENERATION_MODEL
# A model that fails at run time on purpose (tests/models.py): its manifest allows 64 tokens, its
# position table holds 16, so a text of more than 14 tokens fails inside ONNX Runtime. The error
# table's answer to that is INTERNAL / 500 with the request id (tests/gateway/test_core.py), so
# the fuzzers accept that answer from this model only, and check that it is the table's.
FAILING_MODEL = SHORT_POSITIONS
INTERNAL_MESSAGE = "internal error while serving the request; request id "
_LINK_FROM_BYTES = 1024 * 1024

# what the fuzzers steer tuning requests to (besides random strings)
SEEDED_JOB = "ftjob-" + "f" * 24  # a finished (cancelled) job in the fuzz store
UNKNOWN_JOB = "ftjob-" + "0" * 24  # well-formed, never created
DATASET = "fuzz.jsonl"  # under the fuzz store's .datasets/
ADAPTER_NAMES = (ADAPTER, "fuzz-adapter-2", "a", MINILM, "../escape", "x" * 129)
# the base model of a tuning request: mostly one that is not there (refused before any job), so
# that few drawn requests create a job; the real ones still come up and reach the later checks
BASE_MODELS = ("no-such-model", "no-such-model-2", "no-such-model-3", GENERATION_MODEL, MINILM, CLASSIFIER)
MAX_TRAIN_RECORDS = 8
FUZZ_TUNING = TuningSettings(
    max_concurrent_jobs=1, max_queued_jobs=1, threads=1, nice=19, max_train_records=MAX_TRAIN_RECORDS
)
_TUNING_STATE = {".jobs", ".adapters", ".files", ".datasets"}


def _link_or_copy(source: str, target: str) -> None:
    """Large files are linked (read-only to the runtimes); small ones, manifests, are copied."""
    if os.path.getsize(source) >= _LINK_FROM_BYTES:
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def copy_store(store: Path, target: Path) -> Path:
    """The models of ``store`` (not its tuning state) at ``target``."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        return _TUNING_STATE.intersection(names) if Path(folder) == store else set()

    shutil.copytree(store, target, copy_function=_link_or_copy, ignore=ignore)
    return target


def seed_tuning(store: Path, adapter: Path) -> None:
    """One finished job (SEEDED_JOB, with its events, as a job cancelled before it started leaves
    them), one small dataset (DATASET) and two versions of ADAPTER (the files of ``adapter``,
    published as a finished job does) in the store, before its gateway starts."""
    adapters = AdapterStore(store / ".adapters")
    for _ in range(2):
        adapters.publish(
            ADAPTER, adapter, base_model=MINILM, method="classifier", metrics={"val_accuracy": 0.5}
        )
    datasets = store / ".datasets"
    datasets.mkdir()
    records = [{"input": f"say {word}", "output": word} for word in ("one", "two")]
    (datasets / DATASET).write_text("".join(json.dumps(r) + "\n" for r in records))
    jobs = JobStore(store / ".jobs" / "jobs.sqlite")
    try:
        spec = {
            "method": "prompt_tuning",
            "base_model": GENERATION_MODEL,
            "model_store": str(store),
            "hyperparameters": {},
            "sources": {"train": {"dataset": DATASET}, "validation": None},
        }
        jobs.create(SEEDED_JOB, "fuzz-seeded", "prompt_tuning", GENERATION_MODEL, spec)
        jobs.add_event(SEEDED_JOB, "info", f"queued: prompt_tuning on {GENERATION_MODEL} -> fuzz-seeded")
        jobs.set_state(SEEDED_JOB, JobState.CANCELED, reasons=["cancelled"])
        jobs.add_event(SEEDED_JOB, "info", "cancelled before it started")
    finally:
        jobs.close()


@pytest.fixture(scope="session")
def classifier_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of a random LoRA classifier on MiniLM, as a tuning job writes them."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path_factory.mktemp("fuzz-adapter")
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(str(minilm_source()), num_labels=2)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value"])
    get_peft_model(base, config).save_pretrained(str(folder), safe_serialization=True)
    (folder / "labels.json").write_text('{"labels": ["negative", "positive"]}')
    return folder


class JobReaper:
    """Cancels the tuning jobs fuzzed requests create, as soon as their ids come back."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._tuning = tuning_grpc.TuningStub(self._channel)
        self.created: list[str] = []

    def cancel(self, job_id: str) -> None:
        self.created.append(job_id)
        self._tuning.CancelJob(tuning_pb2.JobRequest(job_id=job_id), timeout=30)

    def unfinished(self) -> list[tuple[str, str]]:
        jobs = self._tuning.ListJobs(tuning_pb2.ListJobsRequest(page_size=100), timeout=30).jobs
        finished = {tuning_pb2.COMPLETED, tuning_pb2.CANCELED, tuning_pb2.ERRORED}
        return [(job.id, tuning_pb2.JobState.Name(job.state)) for job in jobs if job.state not in finished]

    def wait_all_finished(self, timeout_s: float = 120.0) -> list[tuple[str, str]]:
        """Cancel what is left and wait for every job to end; the ones that did not, if any."""
        give_up = time.monotonic() + timeout_s
        left = self.unfinished()
        for job_id, _ in left:
            self._tuning.CancelJob(tuning_pb2.JobRequest(job_id=job_id), timeout=30)
        while left and time.monotonic() < give_up:
            time.sleep(0.5)
            left = self.unfinished()
        return left

    def close(self) -> None:
        self._channel.close()


@pytest.fixture(scope="module")
def fuzz_gateway(
    store: Path, http: httpx.Client, classifier_adapter: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    # Exports and conversions happen in the session store first (on a fresh clone the first load
    # exports; every later test reuses it), then the copy links them.
    for model_id in SERVED_MODELS:
        response = http.post(f"/management/models/{model_id}/load", timeout=600)
        assert response.status_code == 200 and response.json()["state"] == "LOADED", response.text
    copy = copy_store(store, tmp_path_factory.mktemp("fuzz") / "store")
    seed_tuning(copy, classifier_adapter)
    settings = dataclasses.replace(gateway_settings(copy), tuning=FUZZ_TUNING)
    server = GatewayThread(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def job_reaper(fuzz_gateway: GatewayThread) -> Iterator[JobReaper]:
    reaper = JobReaper(fuzz_gateway.gateway.addresses.grpc)
    yield reaper
    reaper.close()
