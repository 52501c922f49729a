"""PyTorch causal LM with a running batch of KV caches (iteration-level batching).

``TorchCausalLM`` implements ``runtimes.causal_lm.CausalLMRuntime``. The source is a Hugging
Face folder or a ``.gguf`` file (converted once, see ``runtimes.gguf_convert``). Options (the
manifest's ``settings``): ``eos_token`` and ``add_bos_token`` (tokenizer fixes for GGUF files),
``max_batch_size``, ``max_tokens_per_step``, ``max_queue`` and ``max_context`` (see
``GenerationLimits``; ``max_context`` defaults to the model's position limit, at most 8192).

The running batch is left-padded: every sequence's cache is right-aligned in one
``[rows, kv_heads, width, head_dim]`` tensor per layer, an attention mask marks the real
columns and explicit position ids count each row's real tokens, so a row computes exactly what
it would alone (up to float rounding). A prefilled batch joins by left-padding the narrower of
the two caches; released rows are dropped and columns no row uses any more are cut away.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtimes.base import ThreadSettings
from runtimes.causal_lm import CausalLMRuntime, GenerationLimits, GenerationStep, NewSequence, StepOutput

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 8192
_LIMIT_OPTIONS = ("max_batch_size", "max_tokens_per_step", "max_queue", "max_context")


@dataclass
class _RunningBatch:
    """The caches of the running sequences, row i belonging to ``seq_ids[i]``."""

    seq_ids: list[int]
    keys: list[torch.Tensor]  # per layer [rows, kv_heads, width, head_dim]
    values: list[torch.Tensor]
    mask: torch.Tensor  # int64 [rows, width]: 1 where a column holds a real token of the row
    next_position: torch.Tensor  # int64 [rows]: position id of the row's next token

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


class TorchCausalLM(CausalLMRuntime):
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
        self._model: Any = None
        self._tokenizer: Any = None
        self._backend: Any = None
        self._batch: _RunningBatch | None = None
        self._pad_id = 0
        self._size = 0

    # -- Runtime -------------------------------------------------------------------------
    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.prepare_thread()
        folder = self._folder()
        tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))  # type: ignore[no-untyped-call]
        if self._fixes.eos_token is not None:
            tokenizer.eos_token = self._fixes.eos_token
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{folder} has no eos token; set 'eos_token' in the model's settings")
        model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        model.eval()
        self._model, self._tokenizer = model, tokenizer
        self._backend = tokenizer.backend_tokenizer
        self.eos_token_id = int(tokenizer.eos_token_id)
        self._pad_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        )
        self.vocab_size = int(model.config.vocab_size)
        positions = int(getattr(model.config, "max_position_embeddings", 0) or DEFAULT_MAX_CONTEXT)
        options = {"max_context": min(positions, DEFAULT_MAX_CONTEXT), **self._limit_options}
        if options["max_context"] > positions:
            raise ValueError(
                f"max_context {options['max_context']} exceeds the model's {positions} positions"
            )
        self.limits = GenerationLimits(**options)
        self._batch = None
        self._size = sum(p.numel() * p.element_size() for p in model.parameters())

    def size_bytes(self) -> int:
        if self._size:
            return self._size
        if self._source.is_file():
            return self._source.stat().st_size * 4  # quantized file, dequantized to float32
        return sum(p.stat().st_size for p in self._source.rglob("*") if p.is_file())

    def unload(self) -> None:
        self._model = None
        self._tokenizer = None
        self._backend = None
        self._batch = None
        self._size = 0

    def run_batch(self, batch: GenerationStep) -> StepOutput:
        import torch

        if self._model is None:
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
        rows = torch.cat(logits) if logits else torch.empty(0, self.vocab_size)
        return StepOutput(tuple(ids), rows, prompt_logprobs)

    # -- CausalLMRuntime -----------------------------------------------------------------
    @property
    def running(self) -> tuple[int, ...]:
        return tuple(self._batch.seq_ids) if self._batch is not None else ()

    # The Rust tokenizer itself: thread-safe (the loop encodes while the scheduler decodes) and
    # exact (no clean-up of spaces before punctuation, which transformers may apply on decode).
    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=True).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        text: str = self._backend.decode(list(token_ids), skip_special_tokens=True)
        return text

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        return [str(self._backend.id_to_token(int(t))) for t in token_ids]

    def prepare_thread(self) -> None:
        """Use the configured torch thread counts in the calling thread (OpenMP counts are per thread)."""
        import torch

        torch.set_num_threads(self._threads.intra_op_threads)
        if torch.get_num_interop_threads() != self._threads.inter_op_threads:
            try:
                torch.set_num_interop_threads(self._threads.inter_op_threads)
            except RuntimeError:  # settable once per process, before any inter-op work
                log.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())

    # -- the running batch ---------------------------------------------------------------
    def _folder(self) -> Path:
        if self._source.is_file() and self._source.suffix == ".gguf":
            from runtimes.gguf_convert import convert_cached

            return convert_cached(self._source, self._work_dir, self._fixes)
        if not (self._source / "config.json").is_file():
            raise FileNotFoundError(f"{self._source} is neither a .gguf file nor a Hugging Face model folder")
        return self._source

    def _forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, past: Any, keep: int
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        out = self._model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
            logits_to_keep=keep,
        )
        cache = out.past_key_values
        return (
            out.logits.float(),
            [layer.keys for layer in cache.layers],
            [layer.values for layer in cache.layers],
        )

    def _decode(self, tokens: dict[int, int]) -> tuple[list[int], torch.Tensor]:
        import torch

        batch = self._batch
        if batch is None or set(tokens) != set(batch.seq_ids):
            running = sorted(batch.seq_ids) if batch else []
            raise ValueError(f"decode must feed every running sequence {running}, got {sorted(tokens)}")
        input_ids = torch.tensor([[tokens[s]] for s in batch.seq_ids], dtype=torch.long)
        mask = torch.cat([batch.mask, torch.ones(len(batch.seq_ids), 1, dtype=torch.long)], dim=1)
        positions = batch.next_position[:, None]
        logits, keys, values = self._forward(input_ids, mask, positions, _cache(batch.keys, batch.values), 1)
        self._batch = _RunningBatch(batch.seq_ids, keys, values, mask, batch.next_position + 1)
        return list(batch.seq_ids), logits[:, -1, :]

    def _prefill(
        self, sequences: Sequence[NewSequence]
    ) -> tuple[list[int], torch.Tensor, dict[int, tuple[float, ...]]]:
        import torch
        from transformers import DynamicCache

        if not sequences:
            raise ValueError("nothing to prefill")
        known = set(self.running)
        for seq in sequences:
            if seq.seq_id in known or not seq.input_ids:
                raise ValueError(f"sequence {seq.seq_id} is already running or has no tokens")
            known.add(seq.seq_id)
        width = max(seq.length for seq in sequences)
        input_ids = torch.full((len(sequences), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, width - seq.length :] = torch.tensor(seq.input_ids, dtype=torch.long)
            mask[row, width - seq.length :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        want_prompt = any(seq.prompt_logprobs for seq in sequences)
        logits, keys, values = self._forward(
            input_ids, mask, positions, DynamicCache(), 0 if want_prompt else 1
        )
        prompt_logprobs: dict[int, tuple[float, ...]] = {}
        if want_prompt:
            for row, seq in enumerate(sequences):
                if seq.prompt_logprobs:
                    prompt_logprobs[seq.seq_id] = _prompt_logprobs(logits[row], input_ids[row], seq.length)
        new = _RunningBatch([seq.seq_id for seq in sequences], keys, values, mask, mask.sum(dim=1))
        self._batch = new if self._batch is None else _merge(self._batch, new)
        return list(new.seq_ids), logits[:, -1, :].clone(), prompt_logprobs

    def _release(self, seq_ids: set[int]) -> None:
        import torch

        batch = self._batch
        if batch is None:
            return
        keep = [row for row, seq_id in enumerate(batch.seq_ids) if seq_id not in seq_ids]
        if not keep:
            self._batch = None
            return
        if len(keep) == len(batch.seq_ids):
            return
        index = torch.tensor(keep, dtype=torch.long)
        mask = batch.mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0  # columns before `start` are padding in every row
        self._batch = _RunningBatch(
            [batch.seq_ids[row] for row in keep],
            [k.index_select(0, index)[:, :, start:] for k in batch.keys],
            [v.index_select(0, index)[:, :, start:] for v in batch.values],
            mask[:, start:],
            batch.next_position.index_select(0, index),
        )


def _cache(keys: list[torch.Tensor], values: list[torch.Tensor]) -> Any:
    """A DynamicCache holding these tensors as they are (no copy)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache()
    cache.layers = []
    for key, value in zip(keys, values, strict=True):
        layer = DynamicLayer()  # type: ignore[no-untyped-call]
        layer.lazy_initialization(key)
        layer.keys, layer.values = key, value
        cache.layers.append(layer)
    return cache


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    import torch.nn.functional as F  # noqa: N812

    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return F.pad(tensor, pad)


def _merge(old: _RunningBatch, new: _RunningBatch) -> _RunningBatch:
    import torch

    width = max(old.width, new.width)
    return _RunningBatch(
        old.seq_ids + new.seq_ids,
        [
            torch.cat([_left_pad(a, width, 2), _left_pad(b, width, 2)])
            for a, b in zip(old.keys, new.keys, strict=True)
        ],
        [
            torch.cat([_left_pad(a, width, 2), _left_pad(b, width, 2)])
            for a, b in zip(old.values, new.values, strict=True)
        ],
        torch.cat([_left_pad(old.mask, width, 1), _left_pad(new.mask, width, 1)]),
        torch.cat([old.next_position, new.next_position]),
    )


def _prompt_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, length: int) -> tuple[float, ...]:
    """log p(token_i | tokens_<i) for i = 1..length-1 of one left-padded row."""
    start = int(input_ids.shape[0]) - length
    scores = logits[start : start + length - 1].log_softmax(dim=-1)
    targets = input_ids[start + 1 :]
    return tuple(float(x) for x in scores.gather(1, targets[:, None]).squeeze(1))
