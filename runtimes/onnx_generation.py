"""ONNX Runtime causal LM with a running batch of KV caches (iteration-level batching).

``OnnxCausalLM`` implements ``runtimes.causal_lm.CausalLMRuntime`` like ``TorchCausalLM`` does,
with the same source kinds (a Hugging Face folder or a ``.gguf`` file, converted once by
``runtimes.gguf_convert``), the same options (``eos_token``, ``add_bos_token``, ``max_batch_size``,
``max_tokens_per_step``, ``max_queue``, ``max_context``) and the same tokenizer. The folder is
exported once with Optimum (task ``text-generation-with-past``, cached by
``runtimes.onnx_export``) and run by an ONNX Runtime ``InferenceSession`` on the CPU.

The exported graph takes ``input_ids``, ``attention_mask`` (past + new columns),
``position_ids`` and ``past_key_values.N.key`` / ``.value`` (``[rows, kv_heads, past, head_dim]``)
and returns ``logits`` then ``present.N.key`` / ``.value``. The running batch is kept as numpy
arrays exactly as the torch runtime keeps its tensors: left-padded caches, an attention mask
marking each row's real columns and explicit position ids counting each row's real tokens, so a
row computes what it would alone. Logits go back as torch tensors (``torch.from_numpy``).
The graph computes logits for every input position (it has no ``logits_to_keep``), so a prefill
pays for the vocabulary projection of every prompt token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.base import ThreadSettings
from runtimes.causal_lm import CausalLMRuntime, GenerationLimits, GenerationStep, NewSequence, StepOutput

log = logging.getLogger(__name__)

TASK = "text-generation-with-past"
DEFAULT_MAX_CONTEXT = 8192
_LIMIT_OPTIONS = ("max_batch_size", "max_tokens_per_step", "max_queue", "max_context")
_ORT_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass
class _RunningBatch:
    """The caches of the running sequences, row i belonging to ``seq_ids[i]``."""

    seq_ids: list[int]
    cache: list[np.ndarray]  # in the graph's past input order: [rows, kv_heads, width, head_dim] each
    mask: np.ndarray  # int64 [rows, width]: 1 where a column holds a real token of the row
    next_position: np.ndarray  # int64 [rows]: position id of the row's next token

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])


class OnnxCausalLM(CausalLMRuntime):
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
        self._session: Any = None
        self._backend: Any = None
        self._past_names: list[str] = []  # past_key_values.N.key / .value, as the graph lists them
        self._output_names: list[str] = []  # logits, then present.N.* in the order of _past_names
        self._cache_shape: tuple[int, int] = (0, 0)  # (kv_heads, head_dim)
        self._cache_dtype: Any = np.float32
        self._batch: _RunningBatch | None = None
        self._pad_id = 0
        self._size = 0

    # -- Runtime -------------------------------------------------------------------------
    def load(self) -> None:
        import onnxruntime as ort
        from transformers import AutoConfig, AutoTokenizer

        from runtimes.onnx_export import export_cached

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

        exported = export_cached(folder, self._work_dir, TASK)
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = self._threads.intra_op_threads
        session_options.inter_op_num_threads = self._threads.inter_op_threads
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(exported / "model.onnx"), sess_options=session_options, providers=["CPUExecutionProvider"]
        )
        self._bind(session, exported)

        self._session, self._backend = session, tokenizer.backend_tokenizer
        self.eos_token_id = int(tokenizer.eos_token_id)
        self._pad_id = int(
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_id
        )
        self.vocab_size = int(config.vocab_size)
        self.limits = GenerationLimits(**options)
        self._batch = None
        self._size = sum(p.stat().st_size for p in exported.glob("model.onnx*") if p.is_file())

    def size_bytes(self) -> int:
        if self._size:
            return self._size
        if self._source.is_file():
            return self._source.stat().st_size * 4  # quantized file, dequantized to float32
        return sum(p.stat().st_size for p in self._source.rglob("*") if p.is_file())

    def unload(self) -> None:
        self._session = None
        self._backend = None
        self._batch = None
        self._size = 0

    def run_batch(self, batch: GenerationStep) -> StepOutput:
        import torch

        if self._session is None:
            raise RuntimeError("model is not loaded")
        if batch.release:
            self._release(set(batch.release))
        ids: list[int] = []
        logits: list[np.ndarray] = []
        prompt_logprobs: dict[int, tuple[float, ...]] = {}
        if batch.decode or self._batch is not None:
            ids_d, logits_d = self._decode(dict(batch.decode))
            ids += ids_d
            logits.append(logits_d)
        if batch.prefill:
            ids_p, logits_p, prompt_logprobs = self._prefill(batch.prefill)
            ids += ids_p
            logits.append(logits_p)
        if not logits:
            return StepOutput((), torch.empty(0, self.vocab_size), {})
        rows = logits[0] if len(logits) == 1 else np.concatenate(logits)
        return StepOutput(tuple(ids), torch.from_numpy(rows.astype(np.float32, copy=False)), prompt_logprobs)

    # -- CausalLMRuntime -----------------------------------------------------------------
    @property
    def running(self) -> tuple[int, ...]:
        return tuple(self._batch.seq_ids) if self._batch is not None else ()

    # The Rust tokenizer itself, as TorchCausalLM uses it: thread-safe and exact on decode.
    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=True).ids)

    def decode(self, token_ids: Sequence[int]) -> str:
        text: str = self._backend.decode(list(token_ids), skip_special_tokens=True)
        return text

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        return [str(self._backend.id_to_token(int(t))) for t in token_ids]

    def prepare_thread(self) -> None:
        """ONNX Runtime keeps its own pools (set per session); bound torch's, which the sampler uses."""
        import torch

        torch.set_num_threads(self._threads.intra_op_threads)

    # -- the exported graph --------------------------------------------------------------
    def _folder(self) -> Path:
        if self._source.is_file() and self._source.suffix == ".gguf":
            from runtimes.gguf_convert import convert_cached

            return convert_cached(self._source, self._work_dir, self._fixes)
        if not (self._source / "config.json").is_file():
            raise FileNotFoundError(f"{self._source} is neither a .gguf file nor a Hugging Face model folder")
        return self._source

    def _bind(self, session: Any, exported: Path) -> None:
        """Check the graph's inputs and outputs and record the cache's names, shape and dtype."""
        inputs = {i.name: i for i in session.get_inputs()}
        missing = {"input_ids", "attention_mask", "position_ids"} - set(inputs)
        if missing:
            raise ValueError(
                f"{exported / 'model.onnx'} lacks inputs {sorted(missing)}; a left-padded running "
                "batch needs explicit attention mask and position ids"
            )
        past = [name for name in inputs if name.startswith("past_key_values.")]
        if not past:
            raise ValueError(f"{exported / 'model.onnx'} has no past_key_values inputs")
        outputs = {o.name for o in session.get_outputs()}
        present = [name.replace("past_key_values.", "present.", 1) for name in past]
        if "logits" not in outputs or not set(present) <= outputs:
            raise ValueError(f"{exported / 'model.onnx'} lacks logits or present.* outputs")
        first = inputs[past[0]]
        dtype = _ORT_FLOATS.get(first.type)
        # [rows, kv_heads, past columns, head_dim]: fixed heads and head size, a symbolic width
        layout = len(first.shape) == 4 and isinstance(first.shape[2], str)
        heads, head_dim = (first.shape[1], first.shape[3]) if layout else (None, None)
        if not (isinstance(heads, int) and isinstance(head_dim, int)) or dtype is None:
            raise ValueError(f"unsupported cache input {first.name}: {first.shape} {first.type}")
        for name in past:
            if inputs[name].shape != first.shape or inputs[name].type != first.type:
                raise ValueError(f"cache inputs differ: {name} {inputs[name].shape} {inputs[name].type}")
        self._past_names, self._output_names = past, ["logits", *present]
        self._cache_shape, self._cache_dtype = (heads, head_dim), dtype

    def _forward(
        self, input_ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}
        feeds.update(zip(self._past_names, past, strict=True))
        outputs = self._session.run(self._output_names, feeds)
        return outputs[0], list(outputs[1:])

    # -- the running batch ---------------------------------------------------------------
    def _decode(self, tokens: dict[int, int]) -> tuple[list[int], np.ndarray]:
        batch = self._batch
        if batch is None or set(tokens) != set(batch.seq_ids):
            running = sorted(batch.seq_ids) if batch else []
            raise ValueError(f"decode must feed every running sequence {running}, got {sorted(tokens)}")
        input_ids = np.array([[tokens[s]] for s in batch.seq_ids], dtype=np.int64)
        mask = np.concatenate([batch.mask, np.ones((len(batch.seq_ids), 1), dtype=np.int64)], axis=1)
        positions = batch.next_position[:, None]
        logits, cache = self._forward(input_ids, mask, positions, batch.cache)
        self._batch = _RunningBatch(batch.seq_ids, cache, mask, batch.next_position + 1)
        return list(batch.seq_ids), logits[:, -1, :]

    def _prefill(
        self, sequences: Sequence[NewSequence]
    ) -> tuple[list[int], np.ndarray, dict[int, tuple[float, ...]]]:
        if not sequences:
            raise ValueError("nothing to prefill")
        known = set(self.running)
        for seq in sequences:
            if seq.seq_id in known or not seq.input_ids:
                raise ValueError(f"sequence {seq.seq_id} is already running or has no tokens")
            known.add(seq.seq_id)
        rows, width = len(sequences), max(seq.length for seq in sequences)
        input_ids = np.full((rows, width), self._pad_id, dtype=np.int64)
        mask = np.zeros((rows, width), dtype=np.int64)
        for row, seq in enumerate(sequences):
            input_ids[row, width - seq.length :] = seq.input_ids
            mask[row, width - seq.length :] = 1
        positions = np.clip(mask.cumsum(axis=1) - 1, 0, None)
        heads, head_dim = self._cache_shape
        empty = np.zeros((rows, heads, 0, head_dim), dtype=self._cache_dtype)
        logits, cache = self._forward(input_ids, mask, positions, [empty] * len(self._past_names))
        prompt_logprobs: dict[int, tuple[float, ...]] = {}
        if any(seq.prompt_logprobs for seq in sequences):
            import torch

            from runtimes.torch_generation import _prompt_logprobs

            for row, seq in enumerate(sequences):
                if seq.prompt_logprobs:
                    prompt_logprobs[seq.seq_id] = _prompt_logprobs(
                        torch.from_numpy(logits[row].astype(np.float32, copy=False)),
                        torch.from_numpy(input_ids[row]),
                        seq.length,
                    )
        new = _RunningBatch([seq.seq_id for seq in sequences], cache, mask, mask.sum(axis=1))
        self._batch = new if self._batch is None else _merge(self._batch, new)
        return list(new.seq_ids), np.ascontiguousarray(logits[:, -1, :]), prompt_logprobs

    def _release(self, seq_ids: set[int]) -> None:
        batch = self._batch
        if batch is None:
            return
        keep = [row for row, seq_id in enumerate(batch.seq_ids) if seq_id not in seq_ids]
        if not keep:
            self._batch = None
            return
        if len(keep) == len(batch.seq_ids):
            return
        index = np.array(keep, dtype=np.int64)
        mask = batch.mask[index]
        used = np.flatnonzero(mask.any(axis=0))
        start = int(used[0]) if len(used) else 0  # columns before `start` are padding in every row
        self._batch = _RunningBatch(
            [batch.seq_ids[row] for row in keep],
            [np.ascontiguousarray(layer[index][:, :, start:]) for layer in batch.cache],
            np.ascontiguousarray(mask[:, start:]),
            batch.next_position[index],
        )


def _stack_left_padded(old: np.ndarray, new: np.ndarray, width: int, axis: int) -> np.ndarray:
    """``old`` rows then ``new`` rows, each right-aligned in ``width`` columns along ``axis``."""
    shape = list(old.shape)
    shape[0], shape[axis] = old.shape[0] + new.shape[0], width
    out = np.zeros(shape, dtype=old.dtype)
    for part, rows in ((old, slice(0, old.shape[0])), (new, slice(old.shape[0], None))):
        region: list[slice] = [rows] + [slice(None)] * (old.ndim - 1)
        region[axis] = slice(width - part.shape[axis], width)
        out[tuple(region)] = part
    return out


def _merge(old: _RunningBatch, new: _RunningBatch) -> _RunningBatch:
    width = max(old.width, new.width)
    return _RunningBatch(
        old.seq_ids + new.seq_ids,
        [_stack_left_padded(a, b, width, 2) for a, b in zip(old.cache, new.cache, strict=True)],
        _stack_left_padded(old.mask, new.mask, width, 1),
        np.concatenate([old.next_position, new.next_position]),
    )
