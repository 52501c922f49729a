"""Multi-task prompt tuning: PEFT's ``MultitaskPromptTuningConfig`` on a causal LM.

Every record carries ``"task"``: task names (mapped to ids 0..n-1 in sorted order) or task ids
(integers used as given), not both. ``tuning.json`` keeps the map as ``"tasks": {name: id}``
(ids given as integers map their decimal string to themselves).

Inference: the adapter loads with ``peft.PeftModel.from_pretrained(base, folder)``; every forward
and ``generate`` call then needs ``task_ids``, a long tensor with one task id per row
(``model.generate(input_ids=..., task_ids=torch.tensor([tasks["qa"]]))``). Serving passes the
request's task (a name looked up in ``tasks``, or an id) the same way, per row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.methods.causal_lm_trainer import CausalLMTrainer
from adapters.methods.data import GenerationRecord, RawRecord
from adapters.methods.multitask_prompt_tuning.config import MultitaskPromptTuningConfig


def task_map(records: list[GenerationRecord], raw: list[RawRecord]) -> dict[str, int]:
    """Task name -> id of the training records (ValueError when names and ids are mixed)."""
    named = isinstance(records[0].task, str)
    for record, where in zip(records, raw, strict=True):
        if isinstance(record.task, str) != named:
            kind = "task names" if named else "task ids"
            raise ValueError(
                f"{where.where}: field 'task' is {record.task!r}, but earlier records use {kind}"
            )
    if named:
        return {name: index for index, name in enumerate(sorted({str(r.task) for r in records}))}
    return {str(task): int(task) for task in sorted({int(r.task) for r in records if r.task is not None})}


class MultitaskPromptTuningTrainer(CausalLMTrainer[MultitaskPromptTuningConfig]):
    with_task = True

    def __init__(self, config: MultitaskPromptTuningConfig) -> None:
        super().__init__(config)
        self.tasks: dict[str, int] = {}
        self.num_tasks = 0

    def check_data(self, train: list[RawRecord], validation: list[RawRecord]) -> None:
        super().check_data(train, validation)
        self.tasks = task_map(self.train_records, train)
        needed = max(self.tasks.values()) + 1
        given = self.config.num_tasks
        if given is not None and given < needed:
            raise ValueError(
                f"num_tasks is {given}, but the training data needs {needed} "
                f"(tasks {', '.join(sorted(self.tasks, key=self.tasks.__getitem__))})"
            )
        self.num_tasks = given if given is not None else needed
        for record, raw in zip(self.validation_records, validation, strict=True):
            if str(record.task) not in self.tasks:
                raise ValueError(
                    f"{raw.where}: field 'task' is {record.task!r}, not a task of the training data"
                )

    def task_id(self, record: GenerationRecord) -> int:
        return self.tasks[str(record.task)]

    def describe(self) -> dict[str, Any]:
        return {"tasks": dict(self.tasks), "num_tasks": self.num_tasks}

    def peft_config(self, folder: Path) -> Any:
        import peft

        config = self.config
        text = config.prompt_tuning_init_method == "TEXT"
        return peft.MultitaskPromptTuningConfig(
            task_type=peft.TaskType.CAUSAL_LM,
            num_virtual_tokens=config.num_virtual_tokens,
            num_tasks=self.num_tasks,
            num_ranks=config.num_ranks,
            prompt_tuning_init=peft.MultitaskPromptTuningInit(config.prompt_tuning_init_method),
            prompt_tuning_init_text=config.prompt_tuning_init_text if text else None,
            tokenizer_name_or_path=str(folder) if text else None,
        )
