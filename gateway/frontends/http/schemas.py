"""Checked-in JSON schemas of the REST task API (Caikit's shapes): pydantic request models.

``inputs`` holds the task's required parameter, or an object of them when there are several;
``parameters`` holds the optional ones. Unknown keys are refused, so a typo is an error
instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _lone_surrogate(value: Any) -> bool:
    """JSON may escape half of a UTF-16 pair (``"\\ud800"``); Python then holds a string that is
    not Unicode text, which tokenizers, file names and the JSON answer itself cannot encode."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(item) for item in value)
    return False


class _Body(_Strict):
    """A whole request body: refused at once if any string in it is not valid Unicode."""

    @model_validator(mode="before")
    @classmethod
    def _unicode_only(cls, data: Any) -> Any:
        if _lone_surrogate(data):
            raise ValueError("strings must be valid Unicode: the body escapes a lone UTF-16 surrogate")
        return data


class NoParameters(_Strict):
    pass


class TruncateParameters(_Strict):
    truncate_input_tokens: int | None = Field(
        None,
        description="0 or unset: refuse input longer than the model's limit; "
        "N > 0: truncate to N tokens; < 0: truncate to the model's limit",
    )


class RerankParameters(TruncateParameters):
    top_n: int | None = Field(None, description="keep the best N documents (unset or 0: all)")
    return_documents: bool | None = Field(None, description="include each document (default true)")
    return_query: bool | None = Field(None, description="include the query (default true)")
    return_text: bool | None = Field(None, description="include each document's text (default true)")


class RerankTasksParameters(TruncateParameters):
    top_n: int | None = Field(None, description="keep the best N documents (unset or 0: all)")
    return_documents: bool | None = Field(None, description="include each document (default true)")
    return_queries: bool | None = Field(None, description="include the queries (default true)")
    return_text: bool | None = Field(None, description="include each document's text (default true)")


class _TaskRequest(_Body):
    model_id: str = Field(..., description="the model to run, as listed by /info/models")


class EmbeddingRequest(_TaskRequest):
    inputs: str
    parameters: TruncateParameters = TruncateParameters()


class EmbeddingTasksRequest(_TaskRequest):
    inputs: list[str]
    parameters: TruncateParameters = TruncateParameters()


class SimilarityInputs(_Strict):
    source_sentence: str
    sentences: list[str]


class SimilarityRequest(_TaskRequest):
    inputs: SimilarityInputs
    parameters: TruncateParameters = TruncateParameters()


class SimilarityTasksInputs(_Strict):
    source_sentences: list[str]
    sentences: list[str]


class SimilarityTasksRequest(_TaskRequest):
    inputs: SimilarityTasksInputs
    parameters: TruncateParameters = TruncateParameters()


# The server reads each document's "text" and echoes the other keys: the schema says so.
_DOCUMENTS = Field(
    ...,
    description="objects with a 'text' field",
    json_schema_extra={
        "items": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": True,
        }
    },
)


class RerankInputs(_Strict):
    query: str
    documents: list[dict[str, Any]] = _DOCUMENTS


class RerankRequest(_TaskRequest):
    inputs: RerankInputs
    parameters: RerankParameters = RerankParameters()


class RerankTasksInputs(_Strict):
    queries: list[str]
    documents: list[dict[str, Any]] = _DOCUMENTS


class RerankTasksRequest(_TaskRequest):
    inputs: RerankTasksInputs
    parameters: RerankTasksParameters = RerankTasksParameters()


class TextRequest(_TaskRequest):
    inputs: str
    parameters: NoParameters = NoParameters()


class BatchingUpdate(_Body):
    """Fields left out keep their current value. Types are strict: "8" or 8.0 is not a batch size."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_batch_size: int | None = Field(None, description="most rows in one model batch")
    max_queue_delay_ms: float | None = Field(None, description="how long a partial batch may wait for rows")
    max_queue_rows: int | None = Field(None, description="rows that may wait; beyond, requests get 429")
    persist: bool = Field(
        False,
        description="also write the settings into the model's manifest (they survive reloads and "
        "restarts); false: they last while the model stays loaded",
    )


class DeployFile(_Strict):
    filename: str
    data: str = Field(..., description="the file's bytes, base64-encoded")
    type: str | None = None


class DeployRequest(_Body):
    """Caikit's POST /management/models body."""

    model_id: str
    model_files: list[DeployFile]


class PinUpdate(_Body):
    pinned: bool


class DecayPenalty(_Strict):
    start_index: int
    decay_factor: float


class TextGenerationParameters(_Strict):
    """Caikit's text-generation parameters; unset ones take the defaults."""

    max_new_tokens: int | None = Field(None, description="most tokens to generate (default 20)")
    min_new_tokens: int | None = Field(None, description="tokens to generate before EOS may end it")
    truncate_input_tokens: int | None = Field(None, description="keep only the last N prompt tokens")
    decoding_method: str | None = Field(None, description="GREEDY (default) or SAMPLING")
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    max_time: float | None = Field(None, description="seconds; then TIME_LIMIT with the partial text")
    exponential_decay_length_penalty: DecayPenalty | None = None
    stop_sequences: list[str] | None = None
    include_stop_sequence: bool | None = None
    seed: int | None = Field(None, description="sampling seed: the same seed gives the same text")
    preserve_input_text: bool | None = None
    input_tokens: bool | None = None
    generated_tokens: bool | None = None
    token_logprobs: bool | None = None
    token_ranks: bool | None = None


class TextGenerationRequest(_TaskRequest):
    inputs: str
    parameters: TextGenerationParameters = TextGenerationParameters()
