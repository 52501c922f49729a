"""The causal-LM runtime interface the generation scheduler drives, and the dataclasses they share.

A causal-LM runtime keeps one *running batch*: the KV caches of every sequence being generated.
The scheduler drives it one iteration at a time with a ``GenerationStep``:

1. ``release``: sequences that finished (or were cancelled) leave the running batch;
2. ``decode``: every remaining running sequence is fed the token sampled for it last iteration,
   and all of them advance together in ONE forward pass over their caches;
3. ``prefill``: new sequences (each with its own prompt length) are encoded together and their
   caches join the running batch. A long prompt may come in chunks over several steps
   (``NewSequence.start`` / ``end``, chunked prefill): until its last chunk the sequence is held
   part-way (its cache kept, no logits), then it joins the running batch like any other.

The answer, a ``StepOutput``, holds the next-token logits of every decoded sequence and every
sequence whose prompt was completed this step. Choosing the tokens (greedy, sampling,
penalties) is the scheduler's business; the runtime only runs the model. Nothing here imports
torch: tensors are typed for the checker only.
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
    # tokens one iteration computes: one per decoded sequence plus the prompt tokens prefilled
    max_tokens_per_step: int = 1024
    max_queue: int = 32  # requests waiting for a slot; beyond it, submissions are shed
    max_context: int = 2048  # prompt + generated tokens of one sequence
    # the most prompt tokens of one sequence prefilled in one iteration; longer prompts come in
    # chunks over several iterations, between which the running sequences keep decoding. On a
    # CPU a decoding row costs about one prompt token, so with 16 rows decoding a chunk of 256
    # adds ~6% to a long prompt's prefill and holds the decoding rows ~16 steps' worth per chunk
    prefill_chunk_tokens: int = 256

    def __post_init__(self) -> None:
        for name in (
            "max_batch_size",
            "max_tokens_per_step",
            "max_queue",
            "max_context",
            "prefill_chunk_tokens",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_context < 2:
            raise ValueError(f"max_context must be at least 2, got {self.max_context}")


@dataclass(frozen=True)
class NewSequence:
    """A sequence to prefill: its id (unique while it lives) and its prompt's token ids."""

    seq_id: int
    input_ids: tuple[int, ...]  # the whole prompt, whichever chunk this step prefills
    prompt_logprobs: bool = False  # also return the log-probability of each prompt token
    adapter: str | None = None  # the key of the adapter the sequence runs with; None: the base model
    # chunked prefill: this step prefills input_ids[start:end]; start > 0 continues a sequence held
    # part-way, end < len(input_ids) leaves it part-way (None: to the end). prompt_logprobs needs
    # the whole prompt in one chunk.
    start: int = 0
    end: int | None = None

    def __post_init__(self) -> None:
        stop = self.stop
        if not 0 <= self.start < stop <= len(self.input_ids):
            raise ValueError(
                f"sequence {self.seq_id}: chunk [{self.start}, {stop}) is not within its "
                f"{len(self.input_ids)} prompt tokens"
            )
        if self.prompt_logprobs and (self.start or stop < len(self.input_ids)):
            raise ValueError(f"sequence {self.seq_id}: prompt log-probabilities need the whole prompt")

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def stop(self) -> int:
        """Where this step's chunk ends (exclusive)."""
        return len(self.input_ids) if self.end is None else self.end

    @property
    def completes(self) -> bool:
        """This chunk ends the prompt: the sequence joins the running batch and gets logits."""
        return self.stop == len(self.input_ids)


@dataclass(frozen=True)
class GenerationStep:
    """One scheduler iteration: release, then decode all running sequences, then prefill."""

    release: tuple[int, ...] = ()
    decode: tuple[tuple[int, int], ...] = ()  # (seq_id, token) for EVERY row of the running batch
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
        """Ids of the sequences the runtime holds: the running batch's rows in row order, then
        those held part-way through a chunked prefill."""

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
