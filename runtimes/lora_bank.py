"""Many LoRA adapters of one base model applied per row in one forward pass (the BGMV idea).

Every adapted linear layer gets one forward hook. For a batch whose rows name adapters, the hook
gathers each row's low-rank pair from a per-layer stack (``A``: [adapters + 1, r, in],
``B``: [adapters + 1, out, r]; index 0 is all zeros, the base) and adds
``scale_row * (x_row @ A_row^T) @ B_row^T`` to the layer's output with two batched matmuls,
whatever the mix of adapters. Ranks differ freely: smaller ranks are zero-padded, which adds
nothing. A batch without adapter rows skips the work entirely.

Loading reads and stacks the weights outside the engine's lock and publishes a new immutable
``BankState`` in one assignment, so a step never sees a half-loaded adapter and an adapter being
loaded never stalls the rows of others. Weights come from PEFT's ``adapter_model.safetensors``
(nothing is unpickled); ``scale`` is PEFT's ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtimes.peft_adapters import CONFIG, WEIGHTS, AdapterFormatError

if TYPE_CHECKING:
    import torch

_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraWeights:
    """One adapter: per module name, its (A [r, in], B [out, r]) and the adapter's scale."""

    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scale: float

    @property
    def nbytes(self) -> int:
        return sum(
            a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.pairs.values()
        )

    @classmethod
    def read(cls, folder: Path, modules: set[str]) -> LoraWeights:
        from safetensors.torch import load_file

        config = json.loads((folder / CONFIG).read_text())
        for unsupported in ("use_dora", "lora_bias"):
            if config.get(unsupported):
                raise AdapterFormatError(f"{folder}: LoRA with {unsupported} cannot be served")
        if config.get("modules_to_save"):
            raise AdapterFormatError(f"{folder}: a LoRA adapter that retrains whole modules cannot be served")
        if config.get("fan_in_fan_out"):
            raise AdapterFormatError(f"{folder}: fan_in_fan_out LoRA cannot be served")
        r, alpha = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        tensors = load_file(str(folder / WEIGHTS))
        pairs: dict[str, tuple[Any, Any]] = {}
        for key, tensor in tensors.items():
            if not key.endswith((".lora_A.weight", ".lora_B.weight")):
                raise AdapterFormatError(f"{folder}: unexpected tensor {key!r} in a LoRA adapter")
            name = key.removeprefix(_PREFIX).rsplit(".lora_", 1)[0]
            if name not in modules:
                raise AdapterFormatError(f"{folder}: the base model has no linear layer {name!r}")
            a, b = pairs.get(name, (None, None))
            if ".lora_A." in key:
                a = tensor.float().contiguous()
            else:
                b = tensor.float().contiguous()
            pairs[name] = (a, b)
        for name, (a, b) in pairs.items():
            if a is None or b is None or a.shape[0] != b.shape[1]:
                raise AdapterFormatError(f"{folder}: layer {name!r} lacks a matching lora_A / lora_B pair")
        if not pairs:
            raise AdapterFormatError(f"{folder}: no LoRA weights")
        return cls(pairs, scale)


@dataclass(frozen=True)
class BankState:
    """An immutable snapshot: adapter key -> row index, and each layer's stacks."""

    index: dict[str, int] = field(default_factory=dict)  # 0 is the base (no adapter)
    a: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> [n + 1, r_max, in]
    b: dict[str, torch.Tensor] = field(default_factory=dict)  # module -> [n + 1, out, r_max]
    scale: torch.Tensor | None = None  # [n + 1]
    weights: dict[str, LoraWeights] = field(default_factory=dict)


class LoraBank:
    def __init__(self, model: Any) -> None:
        import torch

        self._model = model
        self._linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        self.state = BankState()
        self._rows: torch.Tensor | None = None  # the current batch's row -> adapter index
        self._selected = self.state  # the snapshot the current batch's rows index into
        self._hooked: set[str] = set()
        self._write = threading.Lock()  # one change at a time (reads never wait on it)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.state.index)

    def nbytes(self, key: str) -> int:
        return self.state.weights[key].nbytes

    def add(self, key: str, folder: Path) -> None:
        weights = LoraWeights.read(folder, set(self._linears))
        with self._write:
            self.state = _stack({**self.state.weights, key: weights})
            for name in weights.pairs:
                if name not in self._hooked:
                    self._linears[name].register_forward_hook(self._hook(name))
                    self._hooked.add(name)

    def remove(self, key: str) -> None:
        with self._write:
            if key in self.state.weights:
                self.state = _stack({k: w for k, w in self.state.weights.items() if k != key})

    def select(self, adapters: tuple[str | None, ...], rows: int) -> None:
        """Name each row's adapter for the next forward pass (call under the engine's lock)."""
        import torch

        state = self.state
        if not any(key in state.index for key in adapters):
            self._rows = None
            return
        picked = [state.index.get(key, 0) if key is not None else 0 for key in adapters] or [0] * rows
        self._rows = torch.tensor(picked, dtype=torch.long)
        self._selected = state

    def _hook(self, name: str) -> Any:
        import torch

        def hook(module: Any, inputs: tuple[Any, ...], output: Any) -> Any:
            rows = self._rows
            if rows is None:
                return output
            state = self._selected
            a, b = state.a.get(name), state.b.get(name)
            if a is None or b is None or state.scale is None:
                return output
            x = inputs[0]
            low = torch.bmm(x, a.index_select(0, rows).transpose(1, 2))  # [rows, seq, r]
            delta = torch.bmm(low, b.index_select(0, rows).transpose(1, 2))  # [rows, seq, out]
            return output + delta * state.scale.index_select(0, rows)[:, None, None]

        return hook


def _stack(weights: dict[str, LoraWeights]) -> BankState:
    import torch

    if not weights:
        return BankState()
    keys = sorted(weights)
    index = {key: i + 1 for i, key in enumerate(keys)}
    modules = sorted({name for w in weights.values() for name in w.pairs})
    a_stacks, b_stacks = {}, {}
    for name in modules:
        present = [weights[k].pairs.get(name) for k in keys]
        shape_a = next(p[0].shape for p in present if p is not None)
        shape_b = next(p[1].shape for p in present if p is not None)
        rank = max(p[0].shape[0] for p in present if p is not None)
        a = torch.zeros(len(keys) + 1, rank, shape_a[1])
        b = torch.zeros(len(keys) + 1, shape_b[0], rank)
        for row, pair in enumerate(present, start=1):
            if pair is not None:
                a[row, : pair[0].shape[0]] = pair[0]
                b[row, :, : pair[1].shape[1]] = pair[1]
        a_stacks[name], b_stacks[name] = a, b
    scale = torch.tensor([0.0] + [weights[k].scale for k in keys])
    return BankState(index, a_stacks, b_stacks, scale, dict(weights))
