"""PyTorch causal LM with a running batch of KV caches (iteration-level batching).

``TorchCausalLM`` is the PyTorch engine of ``runtimes.causal_lm_base.CausalLMBase`` (which holds
the source, the options, the tokenizer and the running batch's bookkeeping; see there). The
folder is loaded with ``AutoModelForCausalLM`` in float32 and run under ``torch.inference_mode``.

Every sequence's cache is right-aligned in one ``[rows, kv_heads, width, head_dim]`` tensor per
layer for the keys and one for the values, handed to the model as a ``DynamicCache`` holding
those tensors as they are; a prefill keeps only the last position's logits unless prompt
log-probabilities are asked for (``logits_to_keep``).

Adapters (``load_adapter``): many PEFT adapters of this base at once, chosen per row, so
sequences of different adapters share a forward pass. LoRA adapters live in a ``LoraBank``
(runtimes/lora_bank.py: per-row gathered low-rank weights, two batched matmuls per adapted
layer). A prompt adapter's virtual-token embeddings replace the placeholder columns the prefill
put before the prompt (``ForwardInputs.starts``), as PEFT's prompt tuning feeds them. Weights are
read outside the lock; only publishing them, and the forward pass, hold it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtimes.base import ThreadSettings
from runtimes.causal_lm_base import DEFAULT_MAX_CONTEXT, CausalLMBase, ForwardInputs
from runtimes.lora_bank import LoraBank

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MAX_CONTEXT", "TorchCausalLM"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Cache:
    """The running batch's caches: per layer [rows, kv_heads, width, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


class TorchCausalLM(CausalLMBase[_Cache]):
    def __init__(
        self, *, source: Path, work_dir: Path, options: dict[str, Any], threads: ThreadSettings
    ) -> None:
        super().__init__(source=source, work_dir=work_dir, options=options, threads=threads)
        self._model: Any = None
        self._loras: LoraBank | None = None
        self._prompts: dict[str, torch.Tensor] = {}  # prompt adapter -> [virtual tokens, hidden]
        self.adapter_mix: Counter[int] = Counter()  # forward passes by distinct adapters in them
        self._lock = threading.Lock()

    # -- the engine ----------------------------------------------------------------------
    def _load_engine(self, folder: Path) -> int:
        import torch
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        model.eval()
        self._model = model
        self._loras = LoraBank(model)
        self._prompts = {}
        return sum(p.numel() * p.element_size() for p in model.parameters())

    def _unload_engine(self) -> None:
        with self._lock:
            self._model = None
            self._loras = None
            self._prompts = {}

    # -- adapters ------------------------------------------------------------------------
    @property
    def adapter_keys(self) -> frozenset[str]:
        loras = self._loras.keys if self._loras is not None else frozenset()
        return loras | frozenset(self._prompts)

    def adapter_bytes(self, key: str) -> int:
        """Memory an adapter holds (0 when it is not loaded)."""
        prompt = self._prompts.get(key)
        if prompt is not None:
            return int(prompt.numel() * prompt.element_size())
        if self._loras is not None and key in self._loras.keys:
            return self._loras.nbytes(key)
        return 0

    def load_adapter(self, key: str, folder: Path, task: int | None = None) -> None:
        from runtimes.peft_adapters import AdapterFiles, AdapterFormatError

        model, loras = self._model, self._loras
        if model is None or loras is None:
            raise RuntimeError("model is not loaded")
        files = AdapterFiles.read(folder)
        if not files.is_prompt:
            loras.add(key, folder)  # reads and stacks outside the lock; publishing is one assignment
            return
        prompts = files.prompts(int(model.config.hidden_size))
        index = task or 0
        if not 0 <= index < len(prompts):
            raise AdapterFormatError(f"{folder}: task {index} is not one of its {len(prompts)} tasks")
        with self._lock:
            self._prompts[key] = prompts[index]

    def unload_adapter(self, key: str) -> None:
        with self._lock:
            self._prompts.pop(key, None)
            if self._loras is not None:
                self._loras.remove(key)

    def _virtual_tokens(self, adapter: str | None) -> int:
        prompt = self._prompts.get(adapter) if adapter is not None else None
        return int(prompt.shape[0]) if prompt is not None else 0

    def prepare_thread(self) -> None:
        """Use the configured torch thread counts in the calling thread (OpenMP counts are per thread)."""
        import torch

        super().prepare_thread()
        if torch.get_num_interop_threads() != self._threads.inter_op_threads:
            try:
                torch.set_num_interop_threads(self._threads.inter_op_threads)
            except RuntimeError:  # settable once per process, before any inter-op work
                log.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())

    def _forward(self, inputs: ForwardInputs, cache: _Cache | None) -> tuple[torch.Tensor, _Cache]:
        import torch
        from transformers import DynamicCache

        ids = torch.from_numpy(inputs.input_ids)
        kwargs: dict[str, Any] = {
            "attention_mask": torch.from_numpy(inputs.attention_mask),
            "position_ids": torch.from_numpy(inputs.position_ids),
            "past_key_values": DynamicCache() if cache is None else _dynamic_cache(cache),
            "use_cache": True,
            "logits_to_keep": inputs.logits_to_keep,
        }
        with self._lock:
            prompts = [
                (row, self._prompts[key])
                for row, key in enumerate(inputs.adapters)
                if key is not None and key in self._prompts
            ]
            if prompts and inputs.starts:
                embeds = self._model.get_input_embeddings()(ids)
                for row, prompt in prompts:
                    start = inputs.starts[row]
                    embeds[row, start : start + prompt.shape[0]] = prompt
                kwargs["inputs_embeds"] = embeds
            else:
                kwargs["input_ids"] = ids
            if self._loras is not None:
                self._loras.select(inputs.adapters, len(ids))
            # how mixed each forward pass is: distinct adapters among its rows (None, the base, counts)
            self.adapter_mix[len(set(inputs.adapters or (None,)))] += 1
            out = self._model(**kwargs)
        layers = out.past_key_values.layers
        keys, values = [layer.keys for layer in layers], [layer.values for layer in layers]
        return out.logits.float(), _Cache(keys, values)

    def _cache_rows(self, cache: _Cache, rows: np.ndarray, start: int) -> _Cache:
        import torch

        index = torch.from_numpy(rows)
        return _Cache(
            [k.index_select(0, index)[:, :, start:] for k in cache.keys],
            [v.index_select(0, index)[:, :, start:] for v in cache.values],
        )

    def _cache_join(self, old: _Cache, new: _Cache, width: int) -> _Cache:
        import torch

        def join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.cat([_left_pad(a, width, 2), _left_pad(b, width, 2)])

        return _Cache(
            [join(a, b) for a, b in zip(old.keys, new.keys, strict=True)],
            [join(a, b) for a, b in zip(old.values, new.values, strict=True)],
        )


def _dynamic_cache(cache: _Cache) -> Any:
    """A DynamicCache holding these tensors as they are (no copy)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    dynamic = DynamicCache()
    dynamic.layers = []
    for key, value in zip(cache.keys, cache.values, strict=True):
        layer = DynamicLayer()  # type: ignore[no-untyped-call]
        layer.lazy_initialization(key)
        layer.keys, layer.values = key, value
        dynamic.layers.append(layer)
    return dynamic


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    import torch.nn.functional as F  # noqa: N812

    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - dim % tensor.dim()) + [missing, 0]
    return F.pad(tensor, pad)
