"""ONNX Runtime causal LM with a running batch of KV caches (iteration-level batching).

``OnnxCausalLM`` is the ONNX Runtime engine of ``runtimes.causal_lm_base.CausalLMBase``, like
``TorchCausalLM`` is the PyTorch one: the same source kinds (a Hugging Face folder or a ``.gguf``
file, converted once by ``runtimes.gguf_convert``), the same options (``eos_token``,
``add_bos_token``, ``max_batch_size``, ``max_tokens_per_step``, ``max_queue``, ``max_context``),
the same tokenizer and the same running-batch bookkeeping. The folder is exported once with
Optimum (task ``text-generation-with-past``, cached by ``runtimes.onnx_export``) and run by an
ONNX Runtime ``InferenceSession`` on the CPU. With ``"quantization": "int4"`` the session runs
the export's 4-bit weight-only variant instead (MatMulNBits, made and checked once beside the
export by ``runtimes.quantize``).

The exported graph takes ``input_ids``, ``attention_mask`` (past + new columns),
``position_ids`` and ``past_key_values.N.key`` / ``.value`` (``[rows, kv_heads, past, head_dim]``)
and returns ``logits`` then ``present.N.key`` / ``.value``. The cache is kept as numpy arrays in
the graph's past input order, left-padded like the batch's mask. Logits go back as torch
tensors (``torch.from_numpy``). The export is edited once (``runtimes.causal_graph``) to take
``logits_to_keep`` (int64 ``[1]``): a step asks for the last position's logits only (1), so a
prefill no longer pays the vocabulary projection of every prompt token; prompt log-probabilities
ask for every position (0).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtimes import causal_graph, quantize
from runtimes.base import ThreadSettings
from runtimes.causal_lm_base import DEFAULT_MAX_CONTEXT, CausalLMBase, ForwardInputs, stack_left_padded

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_MAX_CONTEXT", "TASK", "OnnxCausalLM"]

log = logging.getLogger(__name__)

TASK = "text-generation-with-past"
_ORT_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16}

# the graph's past inputs in its order: [rows, kv_heads, width, head_dim] each
_Cache = list[np.ndarray]


class OnnxCausalLM(CausalLMBase[_Cache]):
    def __init__(
        self, *, source: Path, work_dir: Path, options: dict[str, Any], threads: ThreadSettings
    ) -> None:
        super().__init__(source=source, work_dir=work_dir, options=options, threads=threads)
        self._quantization = quantize.check_choice("onnx-causal-lm", options.get(quantize.SETTING))
        self.quantization_report: dict[str, Any] = {}
        self._session: Any = None
        self._past_names: list[str] = []  # past_key_values.N.key / .value, as the graph lists them
        self._output_names: list[str] = []  # logits, then present.N.* in the order of _past_names
        self._cache_shape: tuple[int, int] = (0, 0)  # (kv_heads, head_dim)
        self._cache_dtype: Any = np.float32
        self._keeps_logits = False  # the graph has runtimes.causal_graph's logits_to_keep input

    # -- the engine ----------------------------------------------------------------------
    def _load_engine(self, folder: Path) -> int:
        import onnxruntime as ort

        from runtimes.onnx_export import export_cached

        exported = export_cached(folder, self._work_dir, TASK)
        if self._quantization == "int4":
            exported, self.quantization_report = quantize.int4_variant(
                exported, eos_token=self._fixes.eos_token
            )
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
        self._session = session
        return sum(p.stat().st_size for p in exported.glob("model.onnx*") if p.is_file())

    def _unload_engine(self) -> None:
        self._session = None

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
        self._keeps_logits = causal_graph.LOGITS_TO_KEEP in inputs
        self._cache_shape, self._cache_dtype = (heads, head_dim), dtype

    def _forward(self, inputs: ForwardInputs, cache: _Cache | None) -> tuple[torch.Tensor, _Cache]:
        import torch

        if cache is None:
            heads, head_dim = self._cache_shape
            rows = inputs.input_ids.shape[0]
            cache = [np.zeros((rows, heads, 0, head_dim), dtype=self._cache_dtype)] * len(self._past_names)
        feeds = {
            "input_ids": inputs.input_ids,
            "attention_mask": inputs.attention_mask,
            "position_ids": inputs.position_ids,
        }
        if self._keeps_logits:
            feeds[causal_graph.LOGITS_TO_KEEP] = np.asarray([inputs.logits_to_keep], np.int64)
        feeds.update(zip(self._past_names, cache, strict=True))
        outputs = self._session.run(self._output_names, feeds)
        return torch.from_numpy(outputs[0].astype(np.float32, copy=False)), list(outputs[1:])

    def _cache_rows(self, cache: _Cache, rows: np.ndarray, start: int) -> _Cache:
        return [np.ascontiguousarray(layer[rows][:, :, start:]) for layer in cache]

    def _cache_join(self, old: _Cache, new: _Cache, width: int) -> _Cache:
        return [stack_left_padded(a, b, width, 2) for a, b in zip(old, new, strict=True)]
