"""SizeMeter learns a model kind's memory-to-files ratio only from loads that ran undisturbed."""

from __future__ import annotations

import platform

from gateway.models.memory import MAX_RATIO, SizeMeter, limit_arenas, rss_bytes, trim_heap

MB = 1024 * 1024


def allocate(size: int) -> bytes:
    return b"x" * size  # written, so resident (a zeroed allocation could stay unmapped)


def first_load(meter: SizeMeter) -> None:
    _, size = meter.measure("kind", lambda: 10 * MB, lambda: allocate(30 * MB), lambda: (0, 0))
    assert size == 10 * MB  # the first load of a kind pays one-time costs too: it teaches nothing


def test_a_quiet_load_teaches_the_ratio_and_later_loads_use_it() -> None:
    meter = SizeMeter()
    first_load(meter)
    quiet = (0, 7)
    kept, size = meter.measure("kind", lambda: 10 * MB, lambda: allocate(30 * MB), lambda: quiet)
    assert 25 * MB <= size <= 10 * MB * MAX_RATIO  # ~30 MB grown for 10 MB of files
    _, other = meter.measure("kind", lambda: 20 * MB, lambda: None, lambda: (3, 9))
    assert abs(other - 2 * size) <= 2  # twice the files, twice the size: the ratio was learned
    del kept


def test_loads_overlapping_requests_teach_nothing() -> None:
    meter = SizeMeter()
    first_load(meter)
    started = iter(range(100))
    busy = lambda: (1, next(started))  # noqa: E731  (requests running and starting)
    kept, size = meter.measure("kind", lambda: 10 * MB, lambda: allocate(30 * MB), busy)
    assert size == 10 * MB  # the growth may be theirs: files only
    del kept


def test_the_learned_ratio_is_capped() -> None:
    meter = SizeMeter()
    first_load(meter)
    kept, size = meter.measure("kind", lambda: 1 * MB, lambda: allocate(40 * MB), lambda: (0, 0))
    assert size == int(MB * MAX_RATIO)
    del kept


def test_process_memory_helpers() -> None:
    assert rss_bytes() > 10 * MB
    trim_heap()
    assert limit_arenas(8) is (platform.libc_ver()[0] == "glibc")  # elsewhere there is nothing to cap


def test_a_loads_peak_is_learned_apart_from_what_it_keeps() -> None:
    meter = SizeMeter()
    first_load(meter)

    def load() -> bytes:
        transient = allocate(25 * MB)  # e.g. the parsed file, freed once the session is built
        kept = allocate(15 * MB)
        del transient
        return kept

    kept, size = meter.measure("kind", lambda: 10 * MB, load, lambda: (0, 1))
    assert 12 * MB <= size <= 25 * MB  # ~15 MB stays
    assert meter.peak_ratio("kind") >= 3.5  # ~40 MB at the peak for 10 MB of files
    del kept
