"""Training data: records from a list (inline) or a JSONL file, checked before any model loads.

Generation methods take Caikit's ``GenerationTrainRecord`` shape ``{"input": str, "output": str}``
(multi-task prompt tuning adds ``"task"``: a task name or a task id); the classifier takes
``{"text": str, "label": str}``. A problem is a ``ValueError`` that names the record as
``train[3]`` (0-based; a JSONL file adds its line number) and the field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_RECORDS = 1_000_000
MAX_FILE_BYTES = 1 << 30

DataSource = Sequence[Mapping[str, Any]] | Path


@dataclass(frozen=True)
class RawRecord:
    """One record as given, with where it came from (for error messages)."""

    values: Mapping[str, Any]
    where: str  # "train[3]" or "train[3] (data.jsonl line 4)"


@dataclass(frozen=True)
class GenerationRecord:
    input: str
    output: str
    task: str | int | None = None  # multi-task prompt tuning only


@dataclass(frozen=True)
class ClassificationRecord:
    text: str
    label: str


def load_records(source: DataSource, what: str) -> list[RawRecord]:
    """The records of an inline list or a JSONL file (one JSON object a line; blank lines skipped)."""
    if isinstance(source, Path):
        return _read_jsonl(source, what)
    if isinstance(source, str | bytes) or not isinstance(source, Sequence):
        raise ValueError(f"{what} data must be a list of records or a JSONL file path")
    if len(source) > MAX_RECORDS:
        raise ValueError(f"{what} data holds {len(source)} records; at most {MAX_RECORDS}")
    records = []
    for index, values in enumerate(source):
        if not isinstance(values, Mapping):
            raise ValueError(f"{what}[{index}]: a record must be an object, got {type(values).__name__}")
        records.append(RawRecord(values, f"{what}[{index}]"))
    return records


def _read_jsonl(path: Path, what: str) -> list[RawRecord]:
    if not path.is_file():
        raise ValueError(f"{what} data file {path} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{what} data file {path} is larger than {MAX_FILE_BYTES} bytes")
    records: list[RawRecord] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{what}[{len(records)}] ({path.name} line {number})"
            try:
                values = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{where}: not valid JSON: {exc}") from None
            if not isinstance(values, dict):
                raise ValueError(f"{where}: a record must be a JSON object, got {type(values).__name__}")
            records.append(RawRecord(values, where))
            if len(records) > MAX_RECORDS:
                raise ValueError(f"{what} data file {path} holds more than {MAX_RECORDS} records")
    return records


def _fields(record: RawRecord, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    unknown = sorted(str(key) for key in record.values if key not in required and key not in optional)
    if unknown:
        expected = ", ".join([*required, *optional])
        raise ValueError(
            f"{record.where}: unknown field {', '.join(map(repr, unknown))} (expected {expected})"
        )
    for name in required:
        if name not in record.values:
            raise ValueError(f"{record.where}: field {name!r} is missing")
    return dict(record.values)


def _text(record: RawRecord, name: str, value: Any, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{record.where}: field {name!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{record.where}: field {name!r} is empty")
    return value


def _non_empty(records: list[RawRecord], what: str) -> None:
    if not records:
        raise ValueError(f"{what} data is empty: give at least one record")


def generation_records(records: list[RawRecord], what: str, *, with_task: bool) -> list[GenerationRecord]:
    _non_empty(records, what)
    parsed = []
    for record in records:
        values = _fields(record, ("input", "output", "task") if with_task else ("input", "output"))
        task = values.get("task")
        if with_task and not (
            (isinstance(task, str) and task) or (isinstance(task, int) and not isinstance(task, bool))
        ):
            raise ValueError(f"{record.where}: field 'task' must be a task name or a task id, got {task!r}")
        if isinstance(task, int) and task < 0:
            raise ValueError(f"{record.where}: field 'task' must be a task id >= 0, got {task}")
        parsed.append(
            GenerationRecord(
                input=_text(record, "input", values["input"], allow_empty=True),
                output=_text(record, "output", values["output"]),
                task=task,
            )
        )
    return parsed


def classification_records(records: list[RawRecord], what: str) -> list[ClassificationRecord]:
    _non_empty(records, what)
    parsed = []
    for record in records:
        values = _fields(record, ("text", "label"))
        parsed.append(
            ClassificationRecord(
                text=_text(record, "text", values["text"]), label=_text(record, "label", values["label"])
            )
        )
    return parsed


def check_labels(records: list[RawRecord], parsed: list[ClassificationRecord], labels: Sequence[str]) -> None:
    """Every record's label is one of ``labels`` (a ValueError names the first that is not)."""
    known = set(labels)
    for record, item in zip(records, parsed, strict=True):
        if item.label not in known:
            raise ValueError(
                f"{record.where}: field 'label' is {item.label!r}, not one of the labels "
                f"{', '.join(map(repr, labels))}"
            )


def split_off(
    records: list[RawRecord], fraction: float, seed: int
) -> tuple[list[RawRecord], list[RawRecord]]:
    """(train, validation): ``fraction`` of the records, drawn with ``seed``, held out (at least one)."""
    if fraction <= 0:
        return records, []
    held = max(1, round(len(records) * fraction))
    if held >= len(records):
        raise ValueError(
            f"validation_fraction {fraction} leaves no training data from {len(records)} records"
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)  # noqa: S311 (a reproducible split, not a secret)
    chosen = set(order[:held])
    train = [r for i, r in enumerate(records) if i not in chosen]
    validation = [r for i, r in enumerate(records) if i in chosen]
    return train, validation
