"""Training data is checked before any model loads; a problem names the record and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.methods import TuningMethod, parse_config, trainer_class
from adapters.methods.data import load_records, split_off


def check(method: TuningMethod, train: Any, validation: Any = None, **hyperparameters: Any) -> Any:
    trainer = trainer_class(method)(parse_config(method, hyperparameters))
    raw_validation = load_records(validation, "validation") if validation is not None else []
    trainer.check_data(load_records(train, "train"), raw_validation)
    return trainer


GOOD = [{"input": "2+2=", "output": "4"}, {"input": "", "output": "hello"}]


def test_generation_records_from_a_list_and_from_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in GOOD) + "\n\n")  # blank lines are skipped
    for source in (GOOD, path):
        trainer = check(TuningMethod.LORA, source)
        assert [(r.input, r.output) for r in trainer.train_records] == [("2+2=", "4"), ("", "hello")]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([], "train data is empty: give at least one record"),
        ([{"input": "a"}], r"train\[0\]: field 'output' is missing"),
        ([*GOOD, {"input": "a", "output": 3}], r"train\[2\]: field 'output' must be a string, got int"),
        ([{"input": "a", "output": "  "}], r"train\[0\]: field 'output' is empty"),
        (
            [{"input": "a", "output": "b", "outptu": "c"}],
            r"train\[0\]: unknown field 'outptu' \(expected input, output\)",
        ),
        ([GOOD[0], "text"], r"train\[1\]: a record must be an object, got str"),
    ],
)
def test_bad_generation_records(records: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check(TuningMethod.LORA, records)


def test_a_bad_jsonl_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n\n{"input": "a", "output": \n')
    with pytest.raises(ValueError, match=r"train\[1\] \(data.jsonl line 3\): not valid JSON"):
        check(TuningMethod.LORA, path)
    path.write_text('["input", "output"]\n')
    with pytest.raises(ValueError, match=r"train\[0\] \(data.jsonl line 1\): a record must be a JSON object"):
        check(TuningMethod.LORA, path)
    with pytest.raises(ValueError, match=r"train data file .*missing\.jsonl does not exist"):
        check(TuningMethod.LORA, tmp_path / "missing.jsonl")
    path.write_text("\n")
    with pytest.raises(ValueError, match="train data is empty"):
        check(TuningMethod.LORA, path)


def test_validation_records_are_checked_too() -> None:
    with pytest.raises(ValueError, match=r"validation\[1\]: field 'input' is missing"):
        check(TuningMethod.PROMPT_TUNING, GOOD, [GOOD[0], {"output": "x"}])


def test_classifier_labels_come_from_the_data_and_unknown_labels_are_refused() -> None:
    train = [{"text": "goal!", "label": "sports"}, {"text": "bake it", "label": "cooking"}]
    trainer = check(TuningMethod.CLASSIFIER, train, [{"text": "a try", "label": "sports"}])
    assert trainer.labels == ("cooking", "sports")  # sorted: ids follow this order
    with pytest.raises(ValueError, match=r"validation\[0\]: field 'label' is 'music', not one of the labels"):
        check(TuningMethod.CLASSIFIER, train, [{"text": "a song", "label": "music"}])
    with pytest.raises(
        ValueError, match=r"train\[1\]: field 'label' is 'cooking', not one of the labels 'sports', 'x'"
    ):
        check(TuningMethod.CLASSIFIER, train, labels=["sports", "x"])
    with pytest.raises(
        ValueError, match="train data holds one label \\('sports'\\); a classifier needs at least two"
    ):
        check(TuningMethod.CLASSIFIER, train[:1])
    with pytest.raises(ValueError, match=r"train\[0\]: field 'text' is missing"):
        check(TuningMethod.CLASSIFIER, [{"label": "sports"}])
    with pytest.raises(ValueError, match=r"train\[0\]: unknown field 'input' \(expected text, label\)"):
        check(TuningMethod.CLASSIFIER, [{"input": "goal!", "label": "sports"}])
    with pytest.raises(ValueError, match=r"train\[1\]: field 'label' must be a string, got int"):
        check(TuningMethod.CLASSIFIER, [train[0], {"text": "x", "label": 1}])


def test_multitask_records_carry_a_task() -> None:
    named = [{**GOOD[0], "task": "qa"}, {**GOOD[1], "task": "chat"}, {**GOOD[0], "task": "qa"}]
    trainer = check(TuningMethod.MULTITASK_PROMPT_TUNING, named)
    assert trainer.tasks == {"chat": 0, "qa": 1} and trainer.num_tasks == 2
    ids = [{**GOOD[0], "task": 0}, {**GOOD[1], "task": 2}]
    trainer = check(TuningMethod.MULTITASK_PROMPT_TUNING, ids, num_tasks=4)
    assert trainer.tasks == {"0": 0, "2": 2} and trainer.num_tasks == 4
    with pytest.raises(ValueError, match=r"train\[0\]: field 'task' is missing"):
        check(TuningMethod.MULTITASK_PROMPT_TUNING, GOOD)
    with pytest.raises(
        ValueError, match=r"train\[1\]: field 'task' is 1, but earlier records use task names"
    ):
        check(TuningMethod.MULTITASK_PROMPT_TUNING, [named[0], {**GOOD[1], "task": 1}])
    with pytest.raises(ValueError, match="num_tasks is 1, but the training data needs 2"):
        check(TuningMethod.MULTITASK_PROMPT_TUNING, named, num_tasks=1)
    with pytest.raises(
        ValueError, match=r"validation\[0\]: field 'task' is 'math', not a task of the training"
    ):
        check(TuningMethod.MULTITASK_PROMPT_TUNING, named, [{**GOOD[0], "task": "math"}])
    with pytest.raises(
        ValueError, match=r"train\[0\]: field 'task' must be a task name or a task id, got None"
    ):
        check(TuningMethod.MULTITASK_PROMPT_TUNING, [{**GOOD[0], "task": None}])
    with pytest.raises(ValueError, match=r"train\[0\]: unknown field 'task'"):
        check(TuningMethod.LORA, named)


def test_validation_fraction_holds_records_out_reproducibly() -> None:
    records = load_records([{"input": str(i), "output": "x"} for i in range(10)], "train")
    train, held = split_off(records, 0.2, seed=3)
    assert len(train) == 8 and len(held) == 2 and not set(map(id, train)) & set(map(id, held))
    assert [r.where for r in split_off(records, 0.2, seed=3)[1]] == [r.where for r in held]
    assert split_off(records, 0.0, seed=3) == (records, [])
    with pytest.raises(ValueError, match=r"validation_fraction 0\.4 leaves no training data from 1 records"):
        split_off(records[:1], 0.4, seed=3)
