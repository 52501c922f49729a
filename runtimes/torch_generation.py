"""PyTorch causal LM with a running batch of KV caches (iteration-level batching).

``TorchCausalLM`` is the PyTorch engine of ``runtimes.causal_lm_base.CausalLMBase`` (which holds
the source, the options, the tokenizer and the running batch's bookkeeping; see there). The
folder is loaded with ``AutoModelForCausalLM`` in float32 and run under ``torch.inference_mode``.

Every sequence's cache is right-aligned in one ``[rows, kv_heads, width, head_dim]`` tensor per
layer for the keys and one for the values, handed to the model as a ``DynamicCache`` holding
those tensors as they are; a prefill keeps only the last position's logits unless prompt
log-probabilities are asked for (``logits_to_keep``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtimes.base import ThreadSettings
from runtimes.causal_lm_base import DEFAULT_MAX_CONTEXT, CausalLMBase, ForwardInputs

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

    # -- the engine ----------------------------------------------------------------------
    def _load_engine(self, folder: Path) -> int:
        import torch
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        model.eval()
        self._model = model
        return sum(p.numel() * p.element_size() for p in model.parameters())

    def _unload_engine(self) -> None:
        self._model = None

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

        out = self._model(
            input_ids=torch.from_numpy(inputs.input_ids),
            attention_mask=torch.from_numpy(inputs.attention_mask),
            position_ids=torch.from_numpy(inputs.position_ids),
            past_key_values=DynamicCache() if cache is None else _dynamic_cache(cache),
            use_cache=True,
            logits_to_keep=inputs.logits_to_keep,
        )
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
