"""The causal-LM runtime interface the generation scheduler drives, and the dataclasses they share.

A causal-LM runtime keeps one *running batch*: the KV caches of every sequence being generated.
The scheduler drives it one iteration at a time with a ``GenerationStep``:

1. ``release``: sequences that finished (or were cancelled) leave the running batch;
2. ``decode``: every remaining running sequence is fed the token sampled for it last iteration,
   and all of them advance together in ONE forward pass over their caches;
3. ``prefill``: new sequences (each with its own prompt length) are encoded together in one
   forward pass and their caches join the running batch.

The answer, a ``StepOutput``, holds the next-token logits of every decoded and prefilled
sequence. Choosing the tokens (greedy, sampling, penalties) is the scheduler's business; the
runtime only runs the model. Nothing here imports torch: tensors are typed for the checker only.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runtimes.base import Runtime

if TYPE_CHECKING:
    import torch


class AdapterUnsupported(ValueError):
    """The engine cannot hold adapters (PEFT adapters are served by the torch engine)."""


class ChatTemplateError(ValueError):
    """The chat messages cannot be rendered into a prompt; the message says why."""


class NoChatTemplate(ChatTemplateError):
    """The model's tokenizer carries no chat template."""


@dataclass(frozen=True)
class GenerationLimits:
    """How much one model's scheduler may hold; options of the model's manifest."""

    max_batch_size: int = 8  # sequences in the running batch at once
    max_tokens_per_step: int = 1024  # prompt tokens (padded) prefilled in one iteration
    max_queue: int = 32  # requests waiting for a slot; beyond it, submissions are shed
    max_context: int = 2048  # prompt + generated tokens of one sequence

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_tokens_per_step", "max_queue", "max_context"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_context < 2:
            raise ValueError(f"max_context must be at least 2, got {self.max_context}")


@dataclass(frozen=True)
class NewSequence:
    """A sequence to prefill: its id (unique while it lives) and its prompt's token ids."""

    seq_id: int
    input_ids: tuple[int, ...]
    prompt_logprobs: bool = False  # also return the log-probability of each prompt token
    adapter: str | None = None  # the key of the adapter the sequence runs with; None: the base model

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class GenerationStep:
    """One scheduler iteration: release, then decode all running sequences, then prefill."""

    release: tuple[int, ...] = ()
    decode: tuple[tuple[int, int], ...] = ()  # (seq_id, token) for EVERY running sequence
    prefill: tuple[NewSequence, ...] = ()


@dataclass(frozen=True)
class StepOutput:
    """Next-token logits for the decoded sequences, then the prefilled ones, in that order."""

    seq_ids: tuple[int, ...]
    logits: torch.Tensor  # float32 [len(seq_ids), vocab]
    # seq_id -> log-probability of prompt tokens 1..n-1 (the first has no context), when asked
    prompt_logprobs: Mapping[int, tuple[float, ...]] = field(default_factory=dict)

    def row(self, seq_id: int) -> int:
        return self.seq_ids.index(seq_id)


class CausalLMRuntime(Runtime[GenerationStep, StepOutput]):
    """A decoder-only language model run one ``GenerationStep`` at a time (one caller at a time)."""

    limits: GenerationLimits
    eos_token_id: int
    vocab_size: int

    @property
    @abc.abstractmethod
    def running(self) -> tuple[int, ...]:
        """Ids of the sequences in the running batch, in row order."""

    def prepare_thread(self) -> None:
        """Called once in the thread that will run the steps (e.g. to set per-thread thread pools)."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt (with the special tokens the tokenizer adds, if any)."""

    @abc.abstractmethod
    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of generated token ids, special tokens left out."""

    @abc.abstractmethod
    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        """The vocabulary entry of each token id (as the tokenizer spells it)."""

    @property
    def adapter_keys(self) -> frozenset[str]:
        """Keys of the adapters this runtime holds."""
        return frozenset()

    def adapter_bytes(self, key: str) -> int:
        """Memory an adapter holds (0 when it is not loaded)."""
        return 0

    def load_adapter(self, key: str, folder: Path, task: int | None = None) -> None:
        """Load the PEFT adapter in ``folder`` under ``key`` (safe while steps run in another
        thread); ``task`` picks the task of a multi-task prompt. Sequences name it by key."""
        raise AdapterUnsupported("this engine holds no adapters; torch-causal-lm serves PEFT adapters")

    def unload_adapter(self, key: str) -> None:
        """Drop an adapter; sequences still running with it must have been released."""
        raise AdapterUnsupported("this engine holds no adapters")

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text of chat ``messages`` ({"role", "content"} each) in the model's own chat
        template, ending with the assistant's turn when ``add_generation_prompt``. Raises
        ``NoChatTemplate`` when the model has none, ``ChatTemplateError`` when the template
        refuses the messages (e.g. roles out of order)."""
        raise NoChatTemplate("this model has no chat template")
