"""The one entrypoint of tuning: ``run_tuning(spec, on_progress=..., should_stop=...)``.

A run is prepare (check the spec and data, load the base, tokenize) -> train (the shared optimizer
loop; ``Progress`` after every optimizer step, ``should_stop`` checked after every step) ->
evaluate (validation loss for generation, accuracy for classifiers) -> write the adapter into
``output_dir``: safetensors and JSON only (PEFT's ``save_pretrained(safe_serialization=True)``,
``tuning.json`` saying how to use it). The output is written into a temporary folder beside
``output_dir`` and renamed into place, so a run that fails or is cancelled leaves nothing.

``check_spec`` does the cheap part alone (no torch): a job API calls it to refuse a bad request
before any job exists. The caller runs this in a worker process at low priority; ``threads``
bounds torch's threads here.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base_models import BaseModel, base_model_from_folder, require_kind, resolve_base_model
from adapters.methods import METHODS, TuningMethod, parse_config, trainer_class
from adapters.methods.base import TUNING_FILE, MethodTrainer
from adapters.methods.config import TrainingConfig, check_int
from adapters.methods.data import DataSource, load_records, split_off
from adapters.methods.loop import Progress, ProgressCallback, StopCheck, TuningCancelled, optimize

__all__ = ["Progress", "TuningCancelled", "TuningResult", "TuningSpec", "check_spec", "run_tuning"]

ALLOWED_SUFFIXES = (".safetensors", ".json")
TUNING_FORMAT = 1


@dataclass(frozen=True)
class TuningSpec:
    method: TuningMethod | str
    base_model_path: Path  # a Hugging Face folder (adapters.base_models turns a store model into one)
    train: DataSource  # records inline, or a JSONL file
    output_dir: Path | None = None  # must not exist yet, or be empty (or given to run_tuning)
    base_model: str | None = None  # the base model's id for the record (default: the folder's name)
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    validation: DataSource | None = None  # else config.validation_fraction of train, or none
    threads: int = 1

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, relative_to: Path | None = None, model_store: Path | None = None
    ) -> TuningSpec:
        """A spec from JSON (``taskgate tune SPEC.json``, a job's stored spec); see ``SPEC_FIELDS``.

        ``base_model`` is a model store id (with ``model_store``, given here or in ``data``) or a
        path to a model folder; ``base_model_path`` names the Hugging Face folder directly (then
        ``base_model`` is only the id for the record). Data is a list of records or a JSONL path.
        Relative paths are relative to ``relative_to``.
        """
        if not isinstance(data, Mapping):
            raise ValueError("a tuning spec must be a JSON object")
        unknown = sorted(str(key) for key in data if key not in SPEC_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown spec field {', '.join(map(repr, unknown))}; known: {', '.join(SPEC_FIELDS)}"
            )
        if "method" not in data:
            raise ValueError("spec field 'method' is required")
        method = TuningMethod.parse(data["method"])  # before the base model (which may convert)
        if data.get("model_store") is not None:
            model_store = _path(data["model_store"], "model_store", relative_to)
        if data.get("base_model_path") is not None:
            folder = _path(data["base_model_path"], "base_model_path", relative_to)
            model_id = data.get("base_model")
            if model_id is not None and not isinstance(model_id, str):
                raise ValueError(f"spec field 'base_model' must be a string, got {model_id!r}")
        else:
            if "base_model" not in data:
                raise ValueError("spec field 'base_model' is required (a model store id or a model folder)")
            base = resolve_base_model(data["base_model"], model_store=model_store, relative_to=relative_to)
            folder, model_id = base.folder, base.model_id
        output = data.get("output_dir")
        hyperparameters = data.get("hyperparameters", {})
        if not isinstance(hyperparameters, Mapping):
            raise ValueError("spec field 'hyperparameters' must be an object")
        threads = data.get("threads", 1)
        check_int("threads", threads, 1, 1024)
        return cls(
            method=method,
            base_model_path=folder,
            base_model=model_id,
            train=_data(data, "train", relative_to, required=True),  # type: ignore[arg-type]
            validation=_data(data, "validation", relative_to, required=False),
            output_dir=_path(output, "output_dir", relative_to) if output is not None else None,
            hyperparameters=dict(hyperparameters),
            threads=threads,
        )


# the keys of a spec as JSON: data as a list ("train") or a JSONL path ("train" or "train_path")
SPEC_FIELDS = (
    "method", "base_model", "base_model_path", "model_store", "train", "train_path", "validation",
    "validation_path", "hyperparameters", "output_dir", "threads",
)  # fmt: skip


def _path(value: Any, name: str, relative_to: Path | None) -> Path:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError(f"spec field {name!r} must be a path, got {value!r}")
    path = Path(value)
    return relative_to / path if relative_to is not None and not path.is_absolute() else path


def _data(
    data: Mapping[str, Any], name: str, relative_to: Path | None, *, required: bool
) -> DataSource | None:
    given = [key for key in (name, f"{name}_path") if data.get(key) is not None]
    if len(given) > 1:
        raise ValueError(f"give spec field {name!r} or {name + '_path'!r}, not both")
    if not given:
        if required:
            raise ValueError(f"spec field {name!r} is required (a list of records or a JSONL file path)")
        return None
    value = data[given[0]]
    if isinstance(value, str):
        return _path(value, given[0], relative_to)
    if isinstance(value, list):
        return value
    raise ValueError(f"spec field {given[0]!r} must be a list of records or a JSONL file path")


@dataclass(frozen=True)
class CheckedSpec:
    spec: TuningSpec
    method: TuningMethod
    config: TrainingConfig
    base: BaseModel
    trainer: MethodTrainer[Any]
    output: Path


@dataclass(frozen=True)
class TuningResult:
    output_dir: Path
    method: TuningMethod
    base_model: str
    metrics: dict[str, float]  # train_loss, final_loss, val_loss / val_accuracy, steps, seconds, s_per_step
    files: tuple[str, ...]  # what output_dir holds


def check_spec(spec: TuningSpec) -> CheckedSpec:
    """Everything that can be checked without loading the model (ValueError says what is wrong)."""
    method = TuningMethod.parse(spec.method)
    config = parse_config(method, spec.hyperparameters)
    check_int("threads", spec.threads, 1, 1024)
    base = base_model_from_folder(Path(spec.base_model_path), spec.base_model)
    require_kind(base.kind, METHODS[method].kind, method=method.value, model_id=base.model_id)
    train = load_records(spec.train, "train")
    if spec.validation is not None:
        if config.validation_fraction > 0:
            raise ValueError("give validation data or validation_fraction, not both")
        validation = load_records(spec.validation, "validation")
    else:
        train, validation = split_off(train, config.validation_fraction, config.seed)
    trainer = trainer_class(method)(config)
    trainer.check_data(train, validation)
    if spec.output_dir is None:
        raise ValueError("output_dir is required")
    output = Path(spec.output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"output directory {output} exists and is not empty")
    return CheckedSpec(spec, method, config, base, trainer, output)


def run_tuning(
    spec: TuningSpec,
    *,
    output_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> TuningResult:
    """Tune, evaluate and write the adapter into ``output_dir`` (default: the spec's); raises
    TuningCancelled when ``should_stop`` says so (nothing is written then)."""
    if output_dir is not None:
        spec = dataclasses.replace(spec, output_dir=output_dir)
    checked = check_spec(spec)
    import torch
    from transformers import set_seed

    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        set_seed(checked.config.seed)
        prepared = checked.trainer.prepare(checked.base.folder)
        stats = optimize(
            prepared.model,
            prepared.train,
            prepared.train_batches,
            checked.config,
            on_progress=on_progress,
            should_stop=should_stop,
        )
        metrics: dict[str, float] = {
            "train_loss": sum(stats.losses) / len(stats.losses),
            "final_loss": stats.losses[-1],
            "steps": stats.steps,
            "seconds": round(stats.seconds, 3),
            "s_per_step": round(stats.seconds / stats.steps, 4),
        }
        if prepared.validation is not None:
            metrics.update(checked.trainer.evaluate(prepared))
        files = _write_output(checked, prepared, metrics)
    finally:
        torch.set_num_threads(threads)
    return TuningResult(checked.output, checked.method, checked.base.model_id, metrics, files)


def _name_the_base(config_path: Path, model_id: str) -> None:
    """PEFT records the trainer's folder paths, which mean nothing where the adapter is served:
    name the base model by its id instead (PEFT reads neither path in inference mode, but a config
    with TEXT init must name a tokenizer)."""
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    for key in ("base_model_name_or_path", "tokenizer_name_or_path"):
        if config.get(key):
            config[key] = model_id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write_output(checked: CheckedSpec, prepared: Any, metrics: dict[str, float]) -> tuple[str, ...]:
    output = checked.output
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        about = checked.trainer.save(prepared, staging)
        (staging / "README.md").unlink(missing_ok=True)  # PEFT's model card: not ours to publish
        _name_the_base(staging / "adapter_config.json", checked.base.model_id)
        strays = sorted(p.name for p in staging.iterdir() if not p.name.endswith(ALLOWED_SUFFIXES))
        if strays:
            raise RuntimeError(f"the trainer wrote files that are not safetensors or JSON: {strays}")
        tuning = {
            "format": TUNING_FORMAT,
            "method": checked.method.value,
            "base_model": checked.base.model_id,
            "hyperparameters": checked.config.to_dict(),
            "metrics": metrics,
            "created": time.time(),
            **about,
        }
        (staging / TUNING_FILE).write_text(json.dumps(tuning, indent=2, sort_keys=True) + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private
        if output.is_dir():
            output.rmdir()  # empty (check_spec said so)
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tuple(sorted(p.name for p in output.iterdir()))
