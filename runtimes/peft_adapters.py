"""Reading a PEFT adapter folder for serving: its kind and, for prompts, the virtual tokens.

A folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (PEFT's
``save_pretrained`` with safe serialization); nothing else is read and nothing is unpickled.

- LoRA: the engine loads it into its ``PeftModel`` under the adapter's reference and picks it per
  row with PEFT's ``adapter_names`` (so rows of different adapters share a forward pass).
- Prompt tuning: ``prompt_embeddings`` [virtual tokens, hidden] are the embeddings prepended to
  the prompt, exactly what PEFT's ``PromptEmbedding`` would feed the model.
- Multi-task prompt tuning: PEFT's ``MultitaskPromptEmbedding`` multiplies the shared prompt by
  a rank-r task matrix (``prefix_task_cols[t] @ prefix_task_rows[t]``); it is computed once per
  task here, so a served task is a plain prompt.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


class AdapterFormatError(ValueError):
    """The folder is not a servable PEFT adapter; the message says why."""


class AdapterKind(enum.Enum):
    LORA = "LORA"
    PROMPT_TUNING = "PROMPT_TUNING"
    MULTITASK_PROMPT_TUNING = "MULTITASK_PROMPT_TUNING"


@dataclass(frozen=True)
class AdapterFiles:
    folder: Path
    kind: AdapterKind
    config: dict[str, Any]

    @classmethod
    def read(cls, folder: Path) -> AdapterFiles:
        try:
            config = json.loads((folder / CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise AdapterFormatError(f"{folder}: cannot read {CONFIG}: {exc}") from None
        if not isinstance(config, dict):
            raise AdapterFormatError(f"{folder}: {CONFIG} is not a JSON object")
        if not (folder / WEIGHTS).is_file():
            raise AdapterFormatError(f"{folder}: no {WEIGHTS}")
        peft_type = str(config.get("peft_type", ""))
        try:
            kind = AdapterKind(peft_type)
        except ValueError:
            known = ", ".join(k.value for k in AdapterKind)
            raise AdapterFormatError(
                f"{folder}: peft_type {peft_type!r} is not servable; known: {known}"
            ) from None
        return cls(folder, kind, config)

    @property
    def is_prompt(self) -> bool:
        return self.kind is not AdapterKind.LORA

    def prompts(self, hidden_size: int) -> list[torch.Tensor]:
        """The virtual-token embeddings [tokens, hidden]: one for prompt tuning, one per task
        for multi-task prompt tuning (task order as trained)."""
        from safetensors.torch import load_file

        weights = load_file(str(self.folder / WEIGHTS))
        try:
            shared = weights["prompt_embeddings"].float()
        except KeyError:
            raise AdapterFormatError(f"{self.folder}: {WEIGHTS} has no prompt_embeddings") from None
        if shared.dim() != 2 or shared.shape[1] != hidden_size:
            raise AdapterFormatError(
                f"{self.folder}: prompt_embeddings {tuple(shared.shape)} do not fit hidden size {hidden_size}"
            )
        if self.kind is AdapterKind.PROMPT_TUNING:
            return [shared]
        try:
            cols, rows = weights["prefix_task_cols"].float(), weights["prefix_task_rows"].float()
        except KeyError:
            raise AdapterFormatError(f"{self.folder}: multi-task prompt weights are incomplete") from None
        return [shared * (cols[task] @ rows[task]) for task in range(cols.shape[0])]
