"""The swap-per-group baseline: how PEFT serves many adapters without per-row weights.

One ``PeftModel`` holds every LoRA adapter (``load_adapter``), another every prompt-tuning
adapter (PEFT cannot hold LoRA and prompt learning in one model); each sits on its own copy of
the base. A wave of requests (the rows that are in flight together) is grouped by adapter in
order of first appearance; for each group PEFT's ``set_adapter`` switches to it and ONE
left-padded ``generate`` runs the group's rows together (greedy, exactly ``tokens`` new tokens:
``min_new_tokens = max_new_tokens``). Base rows run on the LoRA model under ``disable_adapter()``.
The prompts are the engine's own token ids, so both sides see the same tokens. (PEFT's batched
prompt tuning drops the position ids and puts a row's left padding between its virtual tokens
and its prompt, so a padded prompt-tuned row may decode differently from the same row alone:
the cost is PEFT's all the same.)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


class SwapBaseline:
    def __init__(
        self, base_folder: Path, loras: dict[str, Path], prompts: dict[str, Path], pad_id: int, eos_id: int
    ) -> None:
        self._folder = base_folder
        self._pad, self._eos = pad_id, eos_id
        self._lora = self._peft(loras)
        self._prompt = self._peft(prompts)
        self._plain: Any = None
        self.kinds = {key: "lora" for key in loras} | {key: "prompt" for key in prompts}

    def _base(self) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(self._folder), dtype=torch.float32).eval()

    def _peft(self, adapters: dict[str, Path]) -> Any:
        from peft import PeftModel

        if not adapters:
            return None
        (first, folder), *rest = adapters.items()
        model = PeftModel.from_pretrained(self._base(), str(folder), adapter_name=first)
        for key, path in rest:
            model.load_adapter(str(path), adapter_name=key)
        return model.eval()

    def generate(self, wave: list[tuple[tuple[int, ...], str | None]], tokens: int) -> list[list[int]]:
        """New token ids of each row of the wave, in the wave's order."""
        groups: dict[str | None, list[int]] = {}
        for row, (_, adapter) in enumerate(wave):
            groups.setdefault(adapter, []).append(row)
        out: list[list[int]] = [[] for _ in wave]
        for adapter, rows in groups.items():
            for row, ids in zip(rows, self._group([wave[r][0] for r in rows], adapter, tokens), strict=True):
                out[row] = ids
        return out

    def _group(self, prompts: list[tuple[int, ...]], adapter: str | None, tokens: int) -> list[list[int]]:
        import contextlib

        import torch

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self._pad] * (width - len(p)) + list(p) for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        switch: Any = contextlib.nullcontext()
        if adapter is None:
            model = self._lora if self._lora is not None else self._plain_model()
            if self._lora is not None:
                switch = self._lora.disable_adapter()
        else:
            model = self._lora if self.kinds[adapter] == "lora" else self._prompt
            model.set_adapter(adapter)
        options = {
            "do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens,
            "pad_token_id": self._pad, "eos_token_id": self._eos,
        }  # fmt: skip
        with torch.inference_mode(), switch, warnings.catch_warnings():
            # PEFT's prompt tuning drops the position ids generate passes (and says so); positions
            # then count the virtual tokens, as Taskgate's engine counts them
            warnings.filterwarnings("ignore", "Position ids are not supported", UserWarning)
            out = model.generate(input_ids=ids, attention_mask=mask, **options)
        new = out[:, width:]
        if new.shape[1] != tokens:
            raise RuntimeError(f"generate made {new.shape[1]} tokens, not {tokens}")
        return [row.tolist() for row in new]

    def _plain_model(self) -> Any:
        if self._plain is None:
            self._plain = self._base()
        return self._plain
