"""What the causal-LM engines share: source, tokenizer, limits and the running batch's bookkeeping.

``CausalLMBase`` implements ``runtimes.causal_lm.CausalLMRuntime`` once for every engine. The
source is a Hugging Face folder or a ``.gguf`` file (converted once, see ``runtimes.gguf_convert``).
Options (the manifest's ``settings``): ``eos_token`` and ``add_bos_token`` (tokenizer fixes for
GGUF files), ``max_batch_size``, ``max_tokens_per_step``, ``max_queue`` and ``max_context`` (see
``GenerationLimits``; ``max_context`` defaults to the model's position limit, at most 8192). The
tokenizer is the Rust one of the folder's ``tokenizer.json``.

The running batch is left-padded: an attention mask (numpy, int64 ``[rows, width]``) marks each
row's real columns and explicit position ids count each row's real tokens, so a row computes
exactly what it would alone (up to float rounding). A prefilled batch joins by left-padding the
narrower of the two; released rows are dropped and columns no row uses any more are cut away.

Prefill (``runtimes.prefill_inputs``): a step's new sequences run in forward passes of similar
prompt length (less padding). A chunked prefill (``NewSequence.start`` / ``end``) keeps the
sequences part-way through their prompt in a second batch of the same kind, ``_filling``: a
later chunk runs over that cache, and the sequence moves to the running batch with its last chunk.

An engine (``OnnxCausalLM``, ``TorchCausalLM``) holds only what really differs: building the
model (``_load_engine``), ONE forward pass over a step's rows (``_forward``, given a
``ForwardInputs`` naming the sequence of every row) and its KV-cache layout (``_cache_rows``,
``_cache_join``), each row of the cache right-aligned in ``width`` columns like the mask.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from runtimes.base import ThreadSettings
from runtimes.causal_lm import (
    CausalLMRuntime,
    ChatTemplateError,
    GenerationLimits,
    GenerationStep,
    NewSequence,
    NoChatTemplate,
    StepOutput,
)
from runtimes.prefill_inputs import first_chunk_arrays, length_groups, next_chunk_arrays, row_prompt_logprobs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 8192
_LIMIT_OPTIONS = ("max_batch_size", "max_tokens_per_step", "max_queue", "max_context", "prefill_chunk_tokens")

CacheT = TypeVar("CacheT")  # an engine's KV caches of the running batch, rows in seq_ids order


@dataclass
class RunningBatch(Generic[CacheT]):
    """The caches of the running sequences, row i belonging to ``seq_ids[i]``."""

    seq_ids: list[int]
    cache: CacheT  # the engine's layout: [rows, kv_heads, width, head_dim] per layer and key/value
    mask: np.ndarray  # int64 [rows, width]: 1 where a column holds a real token of the row
    next_position: np.ndarray  # int64 [rows]: position id of the row's next token

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


@dataclass(frozen=True)
class ForwardInputs:
    """One forward pass: new tokens of every row, over the row's cache (past columns + new ones)."""

    seq_ids: tuple[int, ...]  # the sequence of each row
    input_ids: np.ndarray  # int64 [rows, new]
    attention_mask: np.ndarray  # int64 [rows, past + new]
    position_ids: np.ndarray  # int64 [rows, new]
    logits_to_keep: int  # 1: only the last position's logits are needed; 0: every position's
    adapters: tuple[str | None, ...] = ()  # each row's adapter key (empty: all rows on the base)
    # prefill only: the column where each row's sequence starts; a row whose adapter is a prompt
    # has its virtual tokens there (their input ids are placeholders the engine replaces)
    starts: tuple[int, ...] = ()


class CausalLMBase(CausalLMRuntime, Generic[CacheT]):
    def __init__(
        self, *, source: Path, work_dir: Path, options: dict[str, Any], threads: ThreadSettings
    ) -> None:
        from runtimes.gguf_convert import TokenizerFixes

        self._source = source
        self._work_dir = work_dir
        self._threads = threads
        self._fixes = TokenizerFixes.from_options(options)
        self._limit_options = {name: options[name] for name in _LIMIT_OPTIONS if name in options}
        self.limits = GenerationLimits(**self._limit_options)  # validated now; max_context refined on load
        self.eos_token_id = -1
        self.vocab_size = 0
        self._backend: Any = None
        self._chat: Any = None  # the transformers tokenizer, kept when it has a chat template
        self._batch: RunningBatch[CacheT] | None = None
        self._filling: RunningBatch[CacheT] | None = None  # sequences part-way through their prompt
        self._adapter_of: dict[int, str | None] = {}  # running sequence -> its adapter key
        self._pad_id = 0
        self._size = 0

    # -- the engine ----------------------------------------------------------------------
    @abc.abstractmethod
    def _load_engine(self, folder: Path) -> int:
        """Build the model of this Hugging Face folder; return the bytes it holds."""

    @abc.abstractmethod
    def _unload_engine(self) -> None:
        """Drop the model."""

    @abc.abstractmethod
    def _forward(self, inputs: ForwardInputs, cache: CacheT | None) -> tuple[torch.Tensor, CacheT]:
        """Run the rows over their caches (None: empty, a prefill); float32 logits
        ``[rows, positions kept, vocab]`` and the caches extended by the new columns."""

    @abc.abstractmethod
    def _cache_rows(self, cache: CacheT, rows: np.ndarray, start: int) -> CacheT:
        """The caches of these rows (int64 indices), without the columns before ``start``."""

    @abc.abstractmethod
    def _cache_join(self, old: CacheT, new: CacheT, width: int) -> CacheT:
        """``old`` rows then ``new`` rows, each right-aligned (left-padded) in ``width`` columns."""

    def _cache_release(self, cache: CacheT, rows: np.ndarray, start: int) -> CacheT:
        """The cache of the rows still running after a release (ascending indices, ``start`` as in
        ``_cache_rows``); the old cache is dropped, so an engine may reuse its buffers."""
        return self._cache_rows(cache, rows, start)

    def _virtual_tokens(self, adapter: str | None) -> int:
        """Virtual tokens a prompt adapter puts before the prompt (0: none)."""
        return 0

    # -- Runtime -------------------------------------------------------------------------
    def load(self) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.prepare_thread()
        folder = self._folder()
        tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))  # type: ignore[no-untyped-call]
        if self._fixes.eos_token is not None:
            tokenizer.eos_token = self._fixes.eos_token
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{folder} has no eos token; set 'eos_token' in the model's settings")
        config: Any = AutoConfig.from_pretrained(str(folder))
        positions = int(getattr(config, "max_position_embeddings", 0) or DEFAULT_MAX_CONTEXT)
        options = {"max_context": min(positions, DEFAULT_MAX_CONTEXT), **self._limit_options}
        if options["max_context"] > positions:
            raise ValueError(
                f"max_context {options['max_context']} exceeds the model's {positions} positions"
            )

        size = self._load_engine(folder)
        self._backend = tokenizer.backend_tokenizer
        self._chat = tokenizer if getattr(tokenizer, "chat_template", None) else None
        self.eos_token_id = int(tokenizer.eos_token_id)
        self._pad_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        )
        self.vocab_size = int(config.vocab_size)
        self.limits = GenerationLimits(**options)
        self._batch = None
        self._filling = None
        self._size = size

    def size_bytes(self) -> int:
        if self._size:
            return self._size
        if self._source.is_file():
            return self._source.stat().st_size * 4  # quantized file, dequantized to float32
        return sum(p.stat().st_size for p in self._source.rglob("*") if p.is_file())

    def unload(self) -> None:
        self._unload_engine()
        self._backend = None
        self._chat = None
        self._batch = None
        self._filling = None
        self._adapter_of = {}
        self._size = 0

    def run_batch(self, batch: GenerationStep) -> StepOutput:
        import torch

        if self._backend is None:
            raise RuntimeError("model is not loaded")
        with torch.inference_mode():
            if batch.release:
                self._release(set(batch.release))
            ids: list[int] = []
            logits: list[torch.Tensor] = []
            prompt_logprobs: dict[int, tuple[float, ...]] = {}
            if batch.decode or self._batch is not None:
                ids_d, logits_d = self._decode(dict(batch.decode))
                ids += ids_d
                logits.append(logits_d)
            if batch.prefill:
                ids_p, logits_p, prompt_logprobs = self._prefill(batch.prefill)
                ids += ids_p
                logits.append(logits_p)
        if len(logits) == 1:
            rows = logits[0]  # no copy
        else:
            rows = torch.cat(logits) if logits else torch.empty(0, self.vocab_size)
        return StepOutput(tuple(ids), rows, prompt_logprobs)

    # -- CausalLMRuntime -----------------------------------------------------------------
    @property
    def running(self) -> tuple[int, ...]:
        rows = self._batch.seq_ids if self._batch is not None else []
        return tuple(rows + (self._filling.seq_ids if self._filling is not None else []))

    # The Rust tokenizer itself: thread-safe (the loop encodes while the scheduler decodes) and
    # exact (no clean-up of spaces before punctuation, which transformers may apply on decode).
    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=True).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        text: str = self._backend.decode(list(token_ids), skip_special_tokens=True)
        return text

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        return [str(self._backend.id_to_token(int(t))) for t in token_ids]

    def render_chat(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The tokenizer's own chat template (transformers renders it in a sandboxed Jinja
        environment); the text is tokenized like any prompt, its special-token markers included."""
        from jinja2 import TemplateError

        if self._backend is None:
            raise RuntimeError("model is not loaded")
        if self._chat is None:
            raise NoChatTemplate("this model's tokenizer has no chat template")
        try:
            text = self._chat.apply_chat_template(
                [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template refused the messages: {exc}") from None
        return str(text)

    def prepare_thread(self) -> None:
        """Bound torch's intra-op threads in the calling thread (the sampler uses torch; ONNX
        Runtime keeps its own pools, set per session)."""
        import torch

        torch.set_num_threads(self._threads.intra_op_threads)

    # -- the running batch ---------------------------------------------------------------
    def _folder(self) -> Path:
        if self._source.is_file() and self._source.suffix == ".gguf":
            from runtimes.gguf_convert import convert_cached

            return convert_cached(self._source, self._work_dir, self._fixes)
        if not (self._source / "config.json").is_file():
            raise FileNotFoundError(f"{self._source} is neither a .gguf file nor a Hugging Face model folder")
        return self._source

    def _decode(self, tokens: dict[int, int]) -> tuple[list[int], torch.Tensor]:
        batch = self._batch
        if batch is None or set(tokens) != set(batch.seq_ids):
            running = sorted(batch.seq_ids) if batch else []
            raise ValueError(f"decode must feed every running sequence {running}, got {sorted(tokens)}")
        input_ids = np.array([[tokens[s]] for s in batch.seq_ids], dtype=np.int64)
        mask = np.concatenate([batch.mask, np.ones((len(batch.seq_ids), 1), dtype=np.int64)], axis=1)
        positions = batch.next_position[:, None]
        adapters = tuple(self._adapter_of.get(s) for s in batch.seq_ids)
        inputs = ForwardInputs(
            tuple(batch.seq_ids), input_ids, mask, positions, logits_to_keep=1, adapters=adapters
        )
        logits, cache = self._forward(inputs, batch.cache)
        self._batch = RunningBatch(batch.seq_ids, cache, mask, batch.next_position + 1)
        return list(batch.seq_ids), logits[:, -1, :]

    def _prefill(
        self, sequences: Sequence[NewSequence]
    ) -> tuple[list[int], torch.Tensor, dict[int, tuple[float, ...]]]:
        """Prefill this step's chunks; the ids and last logits of the sequences they complete."""
        import torch

        if not sequences:
            raise ValueError("nothing to prefill")
        self._check_chunks(sequences)
        fresh = [seq for seq in sequences if seq.start == 0]
        parts: list[tuple[list[NewSequence], RunningBatch[CacheT], torch.Tensor]] = []
        prompt_logprobs: dict[int, tuple[float, ...]] = {}
        for group in length_groups([self._virtual_tokens(seq.adapter) + seq.stop for seq in fresh]):
            chosen = [fresh[index] for index in group]
            parts.append(self._first_chunks(chosen, prompt_logprobs))
        later = [seq for seq in sequences if seq.start > 0]
        if later:
            parts.append(self._next_chunks(later))
        ids: list[int] = []
        logits: list[torch.Tensor] = []
        for chosen, part, last in parts:
            done = [row for row, seq in enumerate(chosen) if seq.completes]
            held = [row for row, seq in enumerate(chosen) if not seq.completes]
            if done:
                rows = part if not held else _keep(part, done, self._cache_rows)
                self._batch = rows if self._batch is None else self._merge(self._batch, rows)
                ids += [chosen[row].seq_id for row in done]
                logits.append(last[done] if held else last)
            if held:
                rows = part if not done else _keep(part, held, self._cache_rows)
                self._filling = rows if self._filling is None else self._merge(self._filling, rows)
        out = torch.cat(logits) if logits else torch.empty(0, self.vocab_size)
        return ids, out, prompt_logprobs

    def _check_chunks(self, sequences: Sequence[NewSequence]) -> None:
        running = set(self._batch.seq_ids) if self._batch is not None else set()
        filling = set(self._filling.seq_ids) if self._filling is not None else set()
        seen: set[int] = set()
        for seq in sequences:
            if seq.seq_id in seen or seq.seq_id in running or (seq.start == 0) == (seq.seq_id in filling):
                raise ValueError(
                    f"sequence {seq.seq_id} is already running, part-way through its prompt, named twice, "
                    "or continues a prompt it never started"
                )
            seen.add(seq.seq_id)
            if seq.start == 0 and seq.adapter is not None and seq.adapter not in self.adapter_keys:
                raise ValueError(f"sequence {seq.seq_id} names adapter {seq.adapter!r}, which is not loaded")

    def _first_chunks(
        self, sequences: list[NewSequence], prompt_logprobs: dict[int, tuple[float, ...]]
    ) -> tuple[list[NewSequence], RunningBatch[CacheT], torch.Tensor]:
        """One forward pass over sequences starting their prompt (no cache); fills prompt_logprobs."""
        import torch

        arrays = first_chunk_arrays(sequences, self._virtual_tokens, self._pad_id)
        seq_ids = [seq.seq_id for seq in sequences]
        want_prompt = any(seq.prompt_logprobs for seq in sequences)
        adapters = tuple(seq.adapter for seq in sequences)
        inputs = ForwardInputs(
            tuple(seq_ids),
            arrays.input_ids,
            arrays.mask,
            arrays.position_ids,
            0 if want_prompt else 1,
            adapters,
            arrays.starts,
        )
        logits, cache = self._forward(inputs, None)
        for seq in sequences:
            self._adapter_of[seq.seq_id] = seq.adapter
        for row, seq in enumerate(sequences):
            if seq.prompt_logprobs:
                prompt_logprobs[seq.seq_id] = row_prompt_logprobs(
                    logits[row], torch.from_numpy(arrays.input_ids[row]), seq.length
                )
        new = RunningBatch(seq_ids, cache, arrays.mask, arrays.mask.sum(axis=1))
        return sequences, new, logits[:, -1, :].clone()

    def _next_chunks(
        self, sequences: list[NewSequence]
    ) -> tuple[list[NewSequence], RunningBatch[CacheT], torch.Tensor]:
        """One forward pass continuing sequences part-way through their prompt, over their cache."""
        filling = self._filling
        if filling is None:
            raise ValueError("no sequence is part-way through its prompt")
        row_of = {seq_id: row for row, seq_id in enumerate(filling.seq_ids)}
        rows = [row_of[seq.seq_id] for seq in sequences]
        others = [row for row in range(len(filling.seq_ids)) if row not in set(rows)]
        part = (
            filling if rows == list(range(len(filling.seq_ids))) else _keep(filling, rows, self._cache_rows)
        )
        self._filling = _keep(filling, others, self._cache_rows) if others else None
        arrays = next_chunk_arrays(sequences, part.next_position, self._pad_id)
        mask = np.concatenate([part.mask, arrays.mask], axis=1)
        adapters = tuple(self._adapter_of.get(seq.seq_id) for seq in sequences)
        inputs = ForwardInputs(
            tuple(part.seq_ids),
            arrays.input_ids,
            mask,
            arrays.position_ids,
            logits_to_keep=1,
            adapters=adapters,
        )
        logits, cache = self._forward(inputs, part.cache)
        new = RunningBatch(part.seq_ids, cache, mask, part.next_position + arrays.mask.sum(axis=1))
        return sequences, new, logits[:, -1, :].clone()

    def _release(self, seq_ids: set[int]) -> None:
        for seq_id in seq_ids:
            self._adapter_of.pop(seq_id, None)
        self._batch = self._without(self._batch, seq_ids)
        self._filling = self._without(self._filling, seq_ids)

    def _without(self, batch: RunningBatch[CacheT] | None, seq_ids: set[int]) -> RunningBatch[CacheT] | None:
        if batch is None:
            return None
        keep = [row for row, seq_id in enumerate(batch.seq_ids) if seq_id not in seq_ids]
        if len(keep) == len(batch.seq_ids):
            return batch
        return _keep(batch, keep, self._cache_release) if keep else None

    def _merge(self, old: RunningBatch[CacheT], new: RunningBatch[CacheT]) -> RunningBatch[CacheT]:
        width = max(old.width, new.width)
        return RunningBatch(
            old.seq_ids + new.seq_ids,
            self._cache_join(old.cache, new.cache, width),
            stack_left_padded(old.mask, new.mask, width, 1),
            np.concatenate([old.next_position, new.next_position]),
        )


def _keep(
    batch: RunningBatch[CacheT], rows: list[int], cache_rows: Callable[[CacheT, np.ndarray, int], CacheT]
) -> RunningBatch[CacheT]:
    """These rows of the batch (in this order), without the columns that are padding in all of them."""
    index = np.array(rows, dtype=np.int64)
    mask = batch.mask[index]
    used = np.flatnonzero(mask.any(axis=0))
    start = int(used[0]) if len(used) else 0
    return RunningBatch(
        [batch.seq_ids[row] for row in rows],
        cache_rows(batch.cache, index, start),
        np.ascontiguousarray(mask[:, start:]),
        batch.next_position[index],
    )


def stack_left_padded(old: np.ndarray, new: np.ndarray, width: int, axis: int) -> np.ndarray:
    """``old`` rows then ``new`` rows, each right-aligned in ``width`` columns along ``axis``."""
    shape = list(old.shape)
    shape[0], shape[axis] = old.shape[0] + new.shape[0], width
    out = np.zeros(shape, dtype=old.dtype)
    for part, rows in ((old, slice(0, old.shape[0])), (new, slice(old.shape[0], None))):
        region: list[slice] = [rows] + [slice(None)] * (old.ndim - 1)
        region[axis] = slice(width - part.shape[axis], width)
        out[tuple(region)] = part
    return out
