from __future__ import annotations

from pathlib import Path

import pytest

from adapters.jobs.store import JobNotFound, JobState, JobStore


def test_jobs_progress_events_and_pages(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    for index in range(5):
        store.create(f"job-{index}", f"adapter-{index}", "lora", "SmolLM2", {"learning_rate": 1e-3})
    assert store.count_unfinished() == 5 and store.name_in_use("adapter-3")
    running = store.set_state("job-3", JobState.RUNNING)
    assert running.state is JobState.RUNNING and running.started_at is not None
    store.set_progress("job-3", {"step": 2, "total_steps": 10, "loss": 1.5})
    store.add_event("job-3", "info", "step 1", {"loss": 2.0})
    store.add_event("job-3", "info", "step 2", {"loss": 1.5})
    assert [e.seq for e in store.events("job-3")] == [1, 2]
    assert [e.message for e in store.events("job-3", after_seq=1)] == ["step 2"]
    done = store.set_state("job-3", JobState.COMPLETED, result={"version": 1}, reasons=["published facts@1"])
    assert done.progress["step"] == 2 and done.result == {"version": 1} and done.finished_at
    # a finished job stays as it ended
    assert store.set_state("job-3", JobState.CANCELED).state is JobState.COMPLETED
    assert not store.name_in_use("adapter-3")

    first = store.page(limit=2)
    second = store.page(after=first[-1].id, limit=2)
    third = store.page(after=second[-1].id, limit=2)
    ids = [job.id for job in first + second + third]
    assert ids == ["job-4", "job-3", "job-2", "job-1", "job-0"]
    with pytest.raises(JobNotFound):
        store.get("nope")


def test_a_restart_keeps_finished_jobs_and_interrupts_running_ones(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    store.create("done", "a", "lora", "m", {})
    store.set_state("done", JobState.RUNNING)
    store.set_state("done", JobState.COMPLETED)
    store.create("running", "b", "lora", "m", {})
    store.set_state("running", JobState.RUNNING)
    store.create("queued", "c", "lora", "m", {})
    store.close()

    reopened = JobStore(path)
    interrupted, queued = reopened.recover()
    assert (interrupted, queued) == (["running"], ["queued"])
    assert reopened.get("running").state is JobState.ERRORED
    assert reopened.get("running").reasons == ("interrupted",)
    assert reopened.get("done").state is JobState.COMPLETED
    assert reopened.get("queued").state is JobState.QUEUED
