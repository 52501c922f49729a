"""The trainer the causal-LM methods share (prompt tuning, multi-task prompt tuning, LoRA).

Each record becomes ``verbalizer(input)`` tokens (with the tokenizer's special tokens, as serving
encodes a prompt) followed by ``output`` tokens and the EOS token; the loss covers the output and
EOS only (prompt tokens are labelled -100), so the adapter learns to answer the prompt and stop.
Prompt and output are tokenized separately, exactly as serving sees them. A method supplies
its PEFT config; PEFT wraps the model, and ``save_pretrained(safe_serialization=True)`` writes it.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.base_models import ModelKind
from adapters.methods.base import MethodTrainer, Prepared
from adapters.methods.causal_lm_config import CausalLMConfig, render_verbalizer
from adapters.methods.data import GenerationRecord, RawRecord, generation_records

if TYPE_CHECKING:
    import torch

CausalConfigT = TypeVar("CausalConfigT", bound=CausalLMConfig)
IGNORE = -100  # the label that takes no loss


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(folder))  # type: ignore[no-untyped-call]
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{folder}: the tokenizer has no EOS token to end the outputs with")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(folder: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True)


class CausalLMTrainer(MethodTrainer[CausalConfigT], abc.ABC):
    kind = ModelKind.CAUSAL_LM

    def __init__(self, config: CausalConfigT) -> None:
        super().__init__(config)
        self.train_records: list[GenerationRecord] = []
        self.validation_records: list[GenerationRecord] = []

    # -- what a method supplies ---------------------------------------------------------
    @abc.abstractmethod
    def peft_config(self, folder: Path) -> Any:
        """The PEFT config that makes the base model tunable."""

    with_task = False  # records carry "task" (multi-task prompt tuning)

    def task_id(self, record: GenerationRecord) -> int:
        raise NotImplementedError

    def check_model(self, model: Any) -> None:
        """A ValueError when the loaded base does not fit the config (before PEFT wraps it)."""

    def describe(self) -> dict[str, Any]:
        """Method-specific entries for tuning.json."""
        return {}

    # -- MethodTrainer -------------------------------------------------------------------
    def check_data(self, train: list[RawRecord], validation: list[RawRecord]) -> None:
        self.train_records = generation_records(train, "train", with_task=self.with_task)
        if validation:
            self.validation_records = generation_records(validation, "validation", with_task=self.with_task)

    def prepare(self, folder: Path) -> Prepared:
        import torch
        from peft import get_peft_model

        tokenizer = load_tokenizer(folder)
        base = load_causal_lm(folder)
        self.check_model(base)
        model = get_peft_model(base, self.peft_config(folder))
        generator = torch.Generator().manual_seed(self.config.seed)
        train = self._loader(self._features(tokenizer, self.train_records), tokenizer, generator)
        validation = None
        if self.validation_records:
            validation = self._loader(self._features(tokenizer, self.validation_records), tokenizer, None)
        return Prepared(model, train, len(train), validation, tokenizer)

    def evaluate(self, prepared: Prepared) -> dict[str, float]:
        import torch

        if prepared.validation is None:
            raise ValueError("no validation data to evaluate on")
        prepared.model.eval()
        total, tokens = 0.0, 0
        with torch.inference_mode():
            for batch in prepared.validation:
                count = int((batch["labels"][:, 1:] != IGNORE).sum())  # shifted: what the loss averages
                total += float(prepared.model(**batch).loss) * count
                tokens += count
        return {"val_loss": total / max(tokens, 1)}

    def save(self, prepared: Prepared, folder: Path) -> dict[str, Any]:
        prepared.model.save_pretrained(str(folder), safe_serialization=True)
        return {
            "verbalizer": self.config.verbalizer,
            "eos_token": prepared.tokenizer.eos_token,
            **self.describe(),
        }

    # -- tokenization --------------------------------------------------------------------
    def _features(self, tokenizer: Any, records: list[GenerationRecord]) -> list[dict[str, Any]]:
        config = self.config
        features = []
        for record in records:
            prompt = render_verbalizer(config.verbalizer, record.input)
            source = tokenizer(prompt, add_special_tokens=True)["input_ids"][: config.max_source_length]
            target = tokenizer(record.output, add_special_tokens=False)["input_ids"]
            if len(target) < config.max_target_length:
                target = [*target, tokenizer.eos_token_id]  # a cut output does not teach stopping
            target = target[: config.max_target_length]
            feature: dict[str, Any] = {
                "input_ids": source + target,
                "attention_mask": [1] * (len(source) + len(target)),
                "labels": [IGNORE] * len(source) + target,
            }
            if self.with_task:
                feature["task_ids"] = self.task_id(record)
            features.append(feature)
        return features

    def _loader(
        self, features: list[dict[str, Any]], tokenizer: Any, generator: torch.Generator | None
    ) -> torch.utils.data.DataLoader[Any]:
        from torch.utils.data import DataLoader
        from transformers import DataCollatorForSeq2Seq

        pad = DataCollatorForSeq2Seq(
            tokenizer, padding="longest", label_pad_token_id=IGNORE, return_tensors="pt"
        )

        def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
            import torch

            rows = [dict(feature) for feature in batch]  # the features are reused every epoch
            tasks = [row.pop("task_ids") for row in rows] if self.with_task else None
            collated = dict(pad(rows))
            if tasks is not None:
                collated["task_ids"] = torch.tensor(tasks, dtype=torch.long)
            return collated

        return DataLoader(
            features,  # type: ignore[arg-type]
            batch_size=self.config.batch_size,
            shuffle=generator is not None,
            generator=generator,
            collate_fn=collate,
        )
