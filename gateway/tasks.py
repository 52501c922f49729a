"""Task names: the kebab-case names of Caikit's HTTP routes, used in manifests too."""

from __future__ import annotations

import enum


class Task(enum.Enum):
    EMBEDDING = "embedding"
    SENTENCE_SIMILARITY = "sentence-similarity"
    RERANK = "rerank"
    TOKENIZATION = "tokenization"
    TEXT_CLASSIFICATION = "text-classification"
    TEXT_GENERATION = "text-generation"

    @classmethod
    def from_name(cls, name: str) -> Task:
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(task.value for task in cls)
            raise ValueError(f"unknown task {name!r}; known tasks: {known}") from None
