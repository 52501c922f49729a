"""The request of ``POST /v1/fine_tuning/jobs`` (OpenAI's shape, openai 3.51
``types/fine_tuning/job_create_params.py``) and its translation into a protocol-neutral ``JobInput``.

Decisions (the door's docstring in ``tuning`` lists them for users):

- ``method.type`` is one of Taskgate's methods (``prompt_tuning``, ``multitask_prompt_tuning``,
  ``lora``, ``classifier``) or OpenAI's ``supervised``, which means ``lora`` on a causal LM and
  ``classifier`` on an encoder. ``dpo`` and ``reinforcement`` are refused (400, ``method.type``).
- Hyper-parameters go in ``method.<type>.hyperparameters`` with Taskgate's names (the method's
  config: ``num_epochs``, ``learning_rate``, ``batch_size``, ``r``, ...). OpenAI's three names are
  mapped: ``n_epochs`` -> ``num_epochs``, ``batch_size`` -> ``batch_size``,
  ``learning_rate_multiplier`` -> ``learning_rate`` = the method's default rate x the multiplier;
  ``"auto"`` keeps the method's default. The deprecated top-level ``hyperparameters`` takes OpenAI's
  three names only. Giving a value twice (``n_epochs`` and ``num_epochs``; ``seed`` at the top and
  in the hyper-parameters with different values; both ``hyperparameters`` forms) is a 400.
- The adapter the job publishes is named ``suffix`` when given (it must be a valid adapter name),
  else ``<model>-ft-<8 hex>``.
- Taskgate's extras: ``training_data`` / ``validation_data`` (records inline),
  ``training_dataset`` / ``validation_dataset`` (a JSONL file under the store's ``.datasets/``) in
  place of ``training_file`` / ``validation_file``; ``gate`` {``metric``, ``threshold``}.
  ``integrations`` and ``metadata`` are refused when given (not supported), never ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.errors import TaskgateError
from gateway.frontends.http.openai.errors import OpenAIParamError, unsupported
from gateway.frontends.http.openai.schemas import param_error
from gateway.models.store import is_model_id
from gateway.tuning.service import DataRef, JobInput

SUPERVISED = "supervised"
TASKGATE_METHODS = ("prompt_tuning", "multitask_prompt_tuning", "lora", "classifier")
OPENAI_ONLY_METHODS = ("dpo", "reinforcement")
METHOD_TYPES = (*TASKGATE_METHODS, SUPERVISED)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OpenAIHyperparameters(_Strict):
    """OpenAI's deprecated top-level ``hyperparameters``."""

    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None


class MethodParams(_Strict):
    hyperparameters: dict[str, Any] | None = None


class MethodIn(_Strict):
    type: str
    supervised: MethodParams | None = None
    dpo: MethodParams | None = None
    reinforcement: MethodParams | None = None
    prompt_tuning: MethodParams | None = None
    multitask_prompt_tuning: MethodParams | None = None
    lora: MethodParams | None = None
    classifier: MethodParams | None = None


class JobCreateRequest(_Strict):
    model: str
    training_file: str | None = None
    validation_file: str | None = None
    hyperparameters: OpenAIHyperparameters | None = None
    method: MethodIn | None = None
    seed: int | None = None
    suffix: str | None = None
    integrations: list[Any] | None = None
    metadata: dict[str, str] | None = None
    # Taskgate's extras
    training_data: list[dict[str, Any]] | None = None
    validation_data: list[dict[str, Any]] | None = None
    training_dataset: str | None = None
    validation_dataset: str | None = None
    gate: dict[str, Any] | None = None


_FIELDS = frozenset(
    name
    for model in (OpenAIHyperparameters, MethodParams, MethodIn, JobCreateRequest)
    for name in model.model_fields
)


def parse_job_request(raw: bytes) -> JobCreateRequest:
    try:
        return JobCreateRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise param_error(exc, _FIELDS) from None


class PreparedJob:
    """A request checked for this door's own rules, as a ``JobInput``, and how to name its fields
    in errors (the service names ``name``, ``hyperparameters``, ... ; this door's fields differ)."""

    def __init__(self, job: JobInput, params: Mapping[str, str]) -> None:
        self.job = job
        self._params = params

    def rename(self, error: TaskgateError) -> TaskgateError:
        """``error`` with its ``param`` said in this door's field names."""
        if error.param is not None:
            param = self._params.get(error.param, error.param)
            if error.param == "hyperparameters":
                field = error.message.split(" ", 1)[0]
                if field in self.job.hyperparameters:
                    param = f"{param}.{field}"
            error.param = param
        return error


def prepare_job(
    body: JobCreateRequest, base_kind: str | None, default_learning_rate: Callable[[str], float]
) -> PreparedJob:
    """The ``JobInput`` of ``body``. ``base_kind`` is ``"causal_lm"``, ``"encoder"`` or None (not in
    the store: the service says so); ``default_learning_rate(method)`` gives a method's default."""
    if body.integrations:
        raise unsupported("integrations", "integrations")
    if body.metadata:
        raise unsupported("metadata", "metadata on fine-tuning jobs")
    method, given_type, from_method = _method(body, base_kind)
    hyper_param = f"method.{given_type}.hyperparameters" if from_method is not None else "hyperparameters"
    hyperparameters = _hyperparameters(body, from_method, hyper_param, default_learning_rate(method))
    if body.seed is not None:
        if "seed" in hyperparameters and hyperparameters["seed"] != body.seed:
            raise OpenAIParamError(
                f"seed is {body.seed} but {hyper_param}.seed is {hyperparameters['seed']!r}; give one",
                param="seed",
            )
        hyperparameters["seed"] = body.seed
    train, train_param = _data(body.training_file, body.training_data, body.training_dataset, "training")
    if train is None:
        raise OpenAIParamError(
            "training data is required: training_file (an uploaded file's id), or training_data / "
            "training_dataset",
            param="training_file",
            code="missing_required_parameter",
        )
    validation, validation_param = _data(
        body.validation_file, body.validation_data, body.validation_dataset, "validation"
    )
    job = JobInput(
        name=body.suffix if body.suffix is not None else _derived_name(body.model),
        method=method,
        base_model=body.model,
        train=train,
        validation=validation,
        hyperparameters=hyperparameters,
        gate=body.gate,
    )
    params = {
        "name": "suffix",
        "method": "method.type",
        "hyperparameters": hyper_param,
        "training_file": train_param or "training_file",
        "validation_file": validation_param or "validation_file",
    }
    return PreparedJob(job, params)


def _method(body: JobCreateRequest, base_kind: str | None) -> tuple[str, str, MethodParams | None]:
    """(Taskgate's method, the type as given, the given type's parameters)."""
    given = body.method.type if body.method is not None else SUPERVISED
    if given in OPENAI_ONLY_METHODS:
        raise unsupported("method.type", f"method {given!r}")
    if given not in METHOD_TYPES:
        raise OpenAIParamError(
            f"method.type must be one of {', '.join(METHOD_TYPES)}, got {given!r}", param="method.type"
        )
    params: MethodParams | None = None
    if body.method is not None:
        for other in (*METHOD_TYPES, *OPENAI_ONLY_METHODS):
            value = getattr(body.method, other)
            if value is not None and other != given:
                raise OpenAIParamError(
                    f"method.{other} is given but method.type is {given!r}", param=f"method.{other}"
                )
        params = getattr(body.method, given) or MethodParams()
    method = given
    if given == SUPERVISED:
        method = "classifier" if base_kind == "encoder" else "lora"
    return method, given, params


def _hyperparameters(
    body: JobCreateRequest, from_method: MethodParams | None, param: str, default_rate: float
) -> dict[str, Any]:
    given = dict(from_method.hyperparameters or {}) if from_method is not None else {}
    if body.hyperparameters is not None:
        if given:
            raise OpenAIParamError(
                f"give the hyper-parameters in {param} or in the deprecated hyperparameters, not both",
                param="hyperparameters",
            )
        given = body.hyperparameters.model_dump(exclude_none=True)
        param = "hyperparameters"
    renames = {"n_epochs": "num_epochs", "learning_rate_multiplier": "learning_rate"}
    for openai_name, ours in renames.items():
        if openai_name not in given:
            continue
        value = given.pop(openai_name)
        if ours in given:
            raise OpenAIParamError(f"give {openai_name} or {ours}, not both", param=f"{param}.{openai_name}")
        if value == "auto":
            continue
        if openai_name == "learning_rate_multiplier":
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise OpenAIParamError(
                    f"learning_rate_multiplier must be a positive number or 'auto', got {value!r}",
                    param=f"{param}.{openai_name}",
                )
            value = default_rate * float(value)
        given[ours] = value
    if given.get("batch_size") == "auto":
        del given["batch_size"]
    return given


def _data(
    file_id: str | None, records: list[dict[str, Any]] | None, dataset: str | None, what: str
) -> tuple[DataRef | None, str | None]:
    named = {
        f"{what}_file": file_id,
        f"{what}_data": records,
        f"{what}_dataset": dataset,
    }
    given = {name: value for name, value in named.items() if value is not None}
    if len(given) > 1:
        names = sorted(given)
        raise OpenAIParamError(f"give one of {', '.join(names)}, not several", param=names[0])
    if not given:
        return None, None
    return DataRef(records=records, file_id=file_id, dataset=dataset), next(iter(given))


def _derived_name(model: str) -> str:
    short = uuid.uuid4().hex[:8]
    stem = model[: 128 - len(short) - 4]
    if is_model_id(stem):
        return f"{stem}-ft-{short}"
    return f"ft-{short}"
