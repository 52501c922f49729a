"""A causal LM on ONNX Runtime GenAI's builder graph (GroupQueryAttention), under our scheduler.

``GenaiCausalLM`` is the third engine of ``runtimes.causal_lm_base.CausalLMBase``, beside
``OnnxCausalLM`` (Optimum's export) and ``TorchCausalLM``: the same sources (a Hugging Face
folder or a ``.gguf`` file), options, tokenizer, chunked prefill and running-batch bookkeeping,
driven by the same iteration-level scheduler. Only the graph differs: ONNX Runtime GenAI's model
builder makes it (``runtimes.genai_graph``, once, cached by fingerprint) from the fused CPU
operators ORT GenAI itself runs (GroupQueryAttention with rotary inside, SkipSimplifiedLayerNorm,
4-bit MatMulNBits), and plain ONNX Runtime runs it; ``onnxruntime-genai`` is not imported here.

    "runtime": "onnx-genai-causal-lm", "settings": {"precision": "auto"}
    (default: the fastest graph that passes its probe, genai_graph.AUTO_ORDER; or "int4-head4",
    "int4", "fp32")

GroupQueryAttention takes no position ids and no left padding: each row's cache holds its tokens
from column 0 (right-padded), ``attention_mask`` is right-padded too, and the operator derives a
row's positions and past length from the mask's row sum. The base class keeps the running batch
left-padded, so this engine translates at its edge: the cache is ``GqaCache`` (arrays
``[rows, kv_heads, width, head_size]`` with each row's valid length), a prefill's right-aligned
prompts are moved to column 0, and lm_head projects only the positions ``logits_rows`` names
(each row's last real token, or all of them for prompt log-probabilities).

GroupQueryAttention writes a row's new tokens after its past, so all rows of one forward pass must
add the same number of tokens once they have a past: decode steps do (one each), a first chunk
has no past (rows of any length), and later chunks of different lengths run as one pass per
length. Adapters are not supported (AdapterUnsupported), as on ``OnnxCausalLM``.

The cache's buffers live across steps: a decode step writes each row's token into the room after
its past (IOBinding, GroupQueryAttention's shared past/present buffer); a row leaving moves the
rows after it down in place, and a row joining is written into a spare row a leaving one left
(``GqaCache.buffers``). Buffers are allocated afresh only when the room runs out, when more rows
join than are spare, or when a release would shrink them (the longest row leaves, or fewer than
half the rows stay).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runtimes import genai_graph
from runtimes.base import ThreadSettings
from runtimes.causal_lm_base import CausalLMBase, ForwardInputs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# ONNX Runtime's intra-op threads spinning while they wait for work: "off", "while_running"
# (the default) or "always" (true / false mean "always" / "off"). A step is hundreds of small
# parallel sections; a worker that sleeps between them is woken each time, and on SmolLM2 int4 one
# row, 2 threads, raw ORT, that costs a third of the step: 4.9 ms spinning always, 5.5 while
# running, 6.3-6.9 off (16 rows: 21.5-24.2 / 22.2-23.4 / 27.3-27.7). "always" keeps the workers
# spinning between steps too, taking the core the gateway's event loop needs to send the tokens,
# and loses through the gateway (0.76 of its runtime's static batch, against 0.95 off).
# "while_running" (session.force_spinning_stop) stops them when a step returns: through the
# gateway it measured 1.15-1.40x off at one stream and 1.14-1.18x at 16 (bench/results/
# generation-spinning.md). Off suits a machine shared with busy neighbours.
SPINNING_SETTING = "spinning"
SPINNING_MODES = {  # mode -> (session.intra_op.allow_spinning, session.force_spinning_stop)
    "off": ("0", "0"),
    "while_running": ("1", "1"),
    "always": ("1", "0"),
}
DEFAULT_SPINNING = "while_running"
# Columns of room a cache gets when it grows or its rows change, so decode steps write their
# token in place (GroupQueryAttention's shared past/present buffer) instead of ONNX Runtime
# allocating and copying every layer's whole cache each step: measured on SmolLM2 int4, 16 rows
# over 100 past tokens, 2 threads: 26.3 vs 29.9 ms a step, same tokens. 64 columns cost
# 3 x 64 x 64 x 4 bytes x 60 caches = 2.9 MB per row.
ROOM = 64


@dataclass
class GqaCache:
    """Past keys and values in the graph's past-input order, each ``[rows, kv_heads, width,
    head_size]`` with row r's tokens in columns ``[0, lengths[r])``; the columns after are room
    for the next tokens (a decode step writes into them in place)."""

    layers: list[np.ndarray]
    lengths: np.ndarray  # int64 [rows]
    bound: list[Any] | None = field(default=None, repr=False)  # OrtValues over ``layers``, made once
    # the whole buffers whose first rows are ``layers`` (None: ``layers`` themselves); rows after
    # them are spare, left by released rows, and a joining row is written there in place
    buffers: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        return int(self.layers[0].shape[2]) if self.layers else 0

    @property
    def whole(self) -> list[np.ndarray]:
        return self.buffers if self.buffers is not None else self.layers

    @property
    def capacity(self) -> int:
        """Rows the buffers hold (these rows and the spare ones after them)."""
        return int(self.whole[0].shape[0]) if self.layers else 0


class GenaiCausalLM(CausalLMBase[GqaCache]):
    def __init__(
        self, *, source: Path, work_dir: Path, options: dict[str, Any], threads: ThreadSettings
    ) -> None:
        own = (genai_graph.PRECISION_SETTING, SPINNING_SETTING)
        engine_options = {k: v for k, v in options.items() if k not in own}
        super().__init__(source=source, work_dir=work_dir, options=engine_options, threads=threads)
        self._precision = genai_graph.check_precision(
            options.get(genai_graph.PRECISION_SETTING, genai_graph.DEFAULT_PRECISION)
        )
        self._spinning = check_spinning(options.get(SPINNING_SETTING, DEFAULT_SPINNING))
        self.quantization_report: dict[str, Any] = {}
        self.precision = self._precision  # the graph's once loaded (``auto`` resolves to one)
        self._session: Any = None
        self._past_names: list[str] = []
        self._output_names: list[str] = []
        self._geometry: tuple[int, int] = (0, 0)  # (kv_heads, head_size)
        self._binding: Any = None  # the last decode step's IOBinding, and the cache values it binds
        self._binding_cache: list[Any] | None = None

    # -- the engine ----------------------------------------------------------------------
    def _load_engine(self, folder: Path) -> int:
        import onnxruntime as ort

        graph, self.quantization_report, self.precision = genai_graph.graph_chosen(
            folder, self._work_dir, self._precision, self._fixes.eos_token
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads.for_generation()
        options.inter_op_num_threads = self._threads.inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        allow, stop = SPINNING_MODES[self._spinning]
        options.add_session_config_entry("session.intra_op.allow_spinning", allow)
        options.add_session_config_entry("session.force_spinning_stop", stop)
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(graph / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name for i in session.get_inputs()}
        past = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
        needed = {"input_ids", "attention_mask", genai_graph.LOGITS_ROWS}
        if not past or not needed <= inputs:
            raise ValueError(f"{graph / 'model.onnx'} lacks {sorted(needed - inputs) or 'past_key_values'}")
        logits = session.get_outputs()[0]
        if logits.name != "logits" or logits.type != "tensor(float)":  # decode binds a float32 buffer
            raise ValueError(f"{graph / 'model.onnx'}: output {logits.name} is {logits.type}, not float")
        self._past_names = past
        self._output_names = ["logits", *(n.replace("past_key_values.", "present.", 1) for n in past)]
        self._geometry = genai_graph.cache_geometry(folder)
        self._session = session
        return sum(p.stat().st_size for p in graph.glob("model.onnx*") if p.is_file())

    def _unload_engine(self) -> None:
        self._session = None
        self._binding = self._binding_cache = None

    def _forward(self, inputs: ForwardInputs, cache: GqaCache | None) -> tuple[torch.Tensor, GqaCache]:
        import torch

        new = int(inputs.input_ids.shape[1])
        real = inputs.attention_mask[:, -new:].sum(axis=1)  # each row's new tokens (right-aligned)
        if cache is not None and len(set(real.tolist())) > 1:
            return self._forward_by_length(inputs, cache, real)
        if cache is not None and new == 1 and inputs.logits_to_keep == 1:
            return self._decode_in_place(inputs.input_ids, cache)
        past = cache.lengths if cache is not None else np.zeros(len(real), np.int64)
        rows, width = len(real), int(real.max())
        ids = np.zeros((rows, width), np.int64)
        for row, count in enumerate(real.tolist()):
            ids[row, :count] = inputs.input_ids[row, new - count :]
        total = past + real
        mask = _right_padded_mask(total)
        if inputs.logits_to_keep == 0:
            picked = np.arange(rows * width, dtype=np.int64)
        else:
            picked = np.arange(rows, dtype=np.int64) * width + real - 1
        heads, head_dim = self._geometry
        if cache is None:
            layers = [np.zeros((rows, heads, 0, head_dim), np.float32)] * len(self._past_names)
        else:  # a later chunk: the rows' columns in use, not the room after them
            used = int(past.max())
            layers = [np.ascontiguousarray(layer[:, :, :used]) for layer in cache.layers]
        feeds = {"input_ids": ids, "attention_mask": mask, genai_graph.LOGITS_ROWS: picked}
        feeds.update(zip(self._past_names, layers, strict=True))
        outputs = self._session.run(self._output_names, feeds)
        logits = outputs[0].astype(np.float32, copy=False)  # [kept, 1, vocab]
        if inputs.logits_to_keep == 0:  # every position, back in the base's left-padded layout
            full = np.zeros((rows, new, logits.shape[-1]), np.float32)
            grid = logits.reshape(rows, width, -1)
            for row, count in enumerate(real.tolist()):
                full[row, new - count :] = grid[row, :count]
            logits = full
        return torch.from_numpy(logits), GqaCache(list(outputs[1:]), total)

    def _decode_in_place(self, input_ids: np.ndarray, cache: GqaCache) -> tuple[torch.Tensor, GqaCache]:
        """One token per row, written into the cache's room: past and present are bound to the
        same buffers, which GroupQueryAttention takes as its shared past/present buffer."""
        import onnxruntime as ort
        import torch

        total = cache.lengths + 1
        if cache.width < int(total.max()):
            cache = _with_room(cache, int(total.max()) + ROOM)
        if cache.bound is None:
            cache.bound = [ort.OrtValue.ortvalue_from_numpy(layer) for layer in cache.layers]
        rows = len(total)
        arrays = (  # kept referenced until the run ends: the binding reads their memory
            np.ascontiguousarray(input_ids, dtype=np.int64),
            _right_padded_mask(total),
            np.arange(rows, dtype=np.int64),
        )
        binding = self._binding_over(cache.bound)
        for name, array in zip(("input_ids", "attention_mask", genai_graph.LOGITS_ROWS), arrays, strict=True):
            binding.bind_cpu_input(name, array)
        logits = np.empty((rows, 1, self.vocab_size), np.float32)  # written by the run: no copy out
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        self._session.run_with_iobinding(binding)
        return torch.from_numpy(logits), GqaCache(cache.layers, total, cache.bound, cache.buffers)

    def _release(self, seq_ids: set[int]) -> None:
        super()._release(seq_ids)
        if self._batch is None:  # idle: the binding no longer holds the last cache's buffers
            self._binding = self._binding_cache = None

    def _binding_over(self, bound: list[Any]) -> Any:
        """The session's binding with every past and present bound to ``bound``. Consecutive
        steps over the same buffers keep one binding: only the step's own inputs and logits are
        bound again. Binding the 60 past and 60 present values anew each step took 0.45 ms of the
        1.2 ms a one-row step spent outside ONNX Runtime (SmolLM2 int4, a slow 2-core machine)."""
        if self._binding is not None and self._binding_cache is bound:
            return self._binding
        binding = self._session.io_binding()
        for past, present, value in zip(self._past_names, self._output_names[1:], bound, strict=True):
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self._binding, self._binding_cache = binding, bound
        return binding

    def _forward_by_length(
        self, inputs: ForwardInputs, cache: GqaCache, real: np.ndarray
    ) -> tuple[torch.Tensor, GqaCache]:
        """Rows continuing a prompt by different numbers of tokens: one pass per count, then the
        rows back in their order (GroupQueryAttention adds the same count to every row)."""
        import torch

        logits = [torch.empty(0)] * len(real)
        parts: list[tuple[np.ndarray, GqaCache]] = []
        for count in sorted(set(real.tolist())):
            rows = np.flatnonzero(real == count)
            new = int(count)
            part = ForwardInputs(
                tuple(inputs.seq_ids[r] for r in rows),
                np.ascontiguousarray(inputs.input_ids[rows][:, -new:]),
                np.ascontiguousarray(inputs.attention_mask[rows]),
                np.ascontiguousarray(inputs.position_ids[rows][:, -new:]),
                inputs.logits_to_keep,
            )
            part_logits, part_cache = self._forward(part, self._cache_rows(cache, rows, 0))
            for index, row in enumerate(rows.tolist()):
                logits[row] = part_logits[index]
            parts.append((rows, part_cache))
        order = np.concatenate([rows for rows, _ in parts])
        joined = parts[0][1]
        for _, part_cache in parts[1:]:
            joined = self._cache_join(joined, part_cache, 0)
        inverse = np.argsort(order)
        return torch.stack(logits), self._cache_rows(joined, inverse, 0)

    def _cache_rows(self, cache: GqaCache, rows: np.ndarray, start: int) -> GqaCache:
        # ``start`` counts left-padding columns of the base's mask; this cache is right-padded,
        # so it keeps the columns up to the longest of these rows instead
        lengths = cache.lengths[rows]
        keep = min(cache.width, (int(lengths.max()) if len(lengths) else 0) + ROOM)
        return GqaCache([np.ascontiguousarray(layer[rows][:, :, :keep]) for layer in cache.layers], lengths)

    def _cache_release(self, cache: GqaCache, rows: np.ndarray, start: int) -> GqaCache:
        """In place when nothing would shrink: each kept row moves down over the released ones
        (its tokens only) and the cache becomes the first rows of the same buffers, so a release
        copies the rows after the first released one instead of allocating and copying every
        kept row whole. The copying ``_cache_rows`` when the longest row leaves (the columns only
        it used go with it) or fewer than half the buffers' rows stay (the buffers shrink)."""
        lengths = cache.lengths[rows]
        count = len(rows)
        if (
            not count
            or min(cache.width, int(lengths.max()) + ROOM) < cache.width
            or count * 2 < cache.capacity
            or np.any(np.diff(rows) <= 0)
        ):
            return self._cache_rows(cache, rows, start)
        moved = np.flatnonzero(rows != np.arange(count))
        if len(moved):  # rows after the first released one move down (their tokens; one copy a layer)
            first = int(moved[0])
            used = int(lengths[first:].max())
            for layer in cache.layers:
                layer[first:count, :, :used] = layer[rows[first:], :, :used]
        return GqaCache([layer[:count] for layer in cache.whole], lengths, buffers=cache.whole)

    def _cache_join(self, old: GqaCache, new: GqaCache, width: int) -> GqaCache:
        rows, joining = len(old.lengths), len(new.lengths)
        if old.capacity >= rows + joining and old.width >= int(new.lengths.max()) + ROOM // 4:
            # in place: the joining rows go into the spare rows released ones left
            for buffer, part in zip(old.whole, new.layers, strict=True):
                used = min(part.shape[2], buffer.shape[2])
                buffer[rows : rows + joining, :, :used] = part[:, :, :used]
            layers = [buffer[: rows + joining] for buffer in old.whole]
            return GqaCache(layers, np.concatenate([old.lengths, new.lengths]), buffers=old.whole)
        keep = int(max(old.lengths.max(), new.lengths.max())) + ROOM
        layers = []
        for a, b in zip(old.layers, new.layers, strict=True):
            out = np.zeros((a.shape[0] + b.shape[0], a.shape[1], keep, a.shape[3]), a.dtype)
            out[: a.shape[0], :, : min(a.shape[2], keep)] = a[:, :, :keep]
            out[a.shape[0] :, :, : min(b.shape[2], keep)] = b[:, :, :keep]
            layers.append(out)
        return GqaCache(layers, np.concatenate([old.lengths, new.lengths]))


def check_spinning(value: Any) -> str:
    """The spinning mode a setting names: one of SPINNING_MODES, or true ("always") / false ("off")."""
    if isinstance(value, bool):
        return "always" if value else "off"
    if not isinstance(value, str) or value not in SPINNING_MODES:
        raise ValueError(
            f"setting {SPINNING_SETTING!r} must be one of {', '.join(SPINNING_MODES)} "
            f"(or true / false), got {value!r}"
        )
    return value


def _right_padded_mask(total: np.ndarray) -> np.ndarray:
    """int64 [rows, max(total)]: 1 in each row's first ``total[row]`` columns."""
    return (np.arange(int(total.max()))[None, :] < total[:, None]).astype(np.int64)


def _with_room(cache: GqaCache, width: int) -> GqaCache:
    """The cache copied into buffers ``width`` columns wide (its tokens first)."""
    layers = []
    for layer in cache.layers:
        out = np.zeros((*layer.shape[:2], width, layer.shape[3]), layer.dtype)
        used = min(layer.shape[2], width)
        out[:, :, :used] = layer[:, :, :used]
        layers.append(out)
    return GqaCache(layers, cache.lengths)
