"""Multi-task prompt tuning's hyper-parameters: prompt tuning's, plus the number of tasks.

``num_tasks`` defaults to the number of tasks in the training data; given, it may leave room
for tasks trained later. ``num_ranks`` is the rank of each task's scaling matrix (PEFT's name).
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.methods.config import check_int
from adapters.methods.prompt_tuning.config import PromptTuningConfig


@dataclass(frozen=True)
class MultitaskPromptTuningConfig(PromptTuningConfig):
    num_tasks: int | None = None
    num_ranks: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_tasks is not None:
            check_int("num_tasks", self.num_tasks, 1, 4096)
        check_int("num_ranks", self.num_ranks, 1, 64)
