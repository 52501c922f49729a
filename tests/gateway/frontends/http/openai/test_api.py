"""The OpenAI-compatible door with the official ``openai`` client, over a real socket, real models.

Generation is kept short (max_tokens <= 16): SmolLM2 runs on two shared CPU cores.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import GatewayThread
from tests.models import CLASSIFIER, MINILM

SMOL = "SmolLM2-135M-Instruct"
PROMPT = "The capital of France is"
HI = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def client(gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{gateway.gateway.addresses.http}/v1", api_key="dummy", max_retries=0, timeout=120
    ) as c:
        yield c


# -- models -------------------------------------------------------------------------------------
def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {MINILM, CLASSIFIER, SMOL} <= set(models)
    assert all(m.object == "model" and m.owned_by == "taskgate" and m.created > 0 for m in models.values())
    one = client.models.retrieve(SMOL)
    assert (one.id, one.object, one.owned_by, one.created) == (
        SMOL,
        "model",
        "taskgate",
        models[SMOL].created,
    )
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found" and "no-such-model" in missing.value.message


# -- completions --------------------------------------------------------------------------------
def test_greedy_completion_is_deterministic_and_respects_max_tokens(client: openai.OpenAI) -> None:
    first = client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=4, temperature=0)
    again = client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=4, temperature=0)
    assert first.object == "text_completion" and first.model == SMOL and first.id.startswith("cmpl-")
    [choice] = first.choices
    assert choice.index == 0 and choice.text and choice.text == again.choices[0].text
    assert choice.finish_reason == "length"
    assert first.usage is not None and first.usage.completion_tokens == 4
    assert first.usage.prompt_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + 4


def test_stop_sequence_ends_the_text_without_it(client: openai.OpenAI) -> None:
    full = client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=12, temperature=0).choices[0].text
    words = full.split()
    assert len(words) >= 3, full
    stop = f" {words[2]}"  # a word in the middle of the greedy text
    cut = client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seed_reproduces_sampling_and_n_gives_indexed_choices(client: openai.OpenAI) -> None:
    def sample(n: int) -> list[str]:
        out = client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=6, temperature=1.2, seed=7, n=n)
        assert [c.index for c in out.choices] == list(range(n))
        return [c.text for c in out.choices]

    one, again, two = sample(1), sample(1), sample(2)
    assert one == again
    assert two[0] == one[0]  # choice i samples with seed + i: choice 0 is the n=1 answer


def test_list_of_prompts_and_echo(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=SMOL, prompt=[PROMPT, "One, two,"], max_tokens=3, temperature=0, n=2
    )
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert out.choices[0].text == out.choices[1].text  # greedy: both choices of a prompt agree
    single = client.completions.create(model=SMOL, prompt="One, two,", max_tokens=3, temperature=0)
    assert out.usage is not None and single.usage is not None
    assert out.choices[2].text == single.choices[0].text
    echoed = client.completions.create(model=SMOL, prompt="One, two,", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text == "One, two," + single.choices[0].text


def test_streamed_completion_matches_the_unary_one(client: openai.OpenAI) -> None:
    unary = client.completions.create(model=SMOL, prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(
        client.completions.create(
            model=SMOL,
            prompt=PROMPT,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == unary.choices[0].text
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [unary.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == unary.usage
    assert all(c.usage is None for c in chunks[:-1])


# -- chat ---------------------------------------------------------------------------------------
def test_chat_prompt_is_the_models_own_template(client: openai.OpenAI) -> None:
    from transformers import AutoTokenizer

    from runtimes.gguf_convert import TokenizerFixes, convert_cached
    from tests.generation_models import SMOLLM_SETTINGS, SMOLLM_WORK, smollm_gguf

    out = client.chat.completions.create(model=SMOL, messages=HI, max_tokens=16, temperature=0)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    [choice] = out.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert "<|im_end|>" not in choice.message.content and "<|im_start|>" not in choice.message.content
    assert out.usage is not None
    if choice.finish_reason == "stop":  # SmolLM2 ended its turn with <|im_end|> (EOS)
        assert out.usage.completion_tokens < 16
    else:
        assert choice.finish_reason == "length" and out.usage.completion_tokens == 16
    # the tokenizer as the runtime converts it (converted here when no earlier test did)
    folder = convert_cached(smollm_gguf(), SMOLLM_WORK, TokenizerFixes.from_options(SMOLLM_SETTINGS))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    rendered = tokenizer.apply_chat_template(HI, tokenize=False, add_generation_prompt=True)
    assert out.usage.prompt_tokens == len(tokenizer(rendered)["input_ids"])


def test_chat_stops_at_the_models_eos(client: openai.OpenAI) -> None:
    """SmolLM2 ends its short greedy answer to "Hello" with <|im_end|> (EOS, id 2): "stop"."""
    out = client.chat.completions.create(
        model=SMOL, messages=[{"role": "user", "content": "Hello"}], max_tokens=16, temperature=0
    )
    assert out.choices[0].finish_reason == "stop", out.choices[0].message.content
    assert out.usage is not None and out.usage.completion_tokens < 16
    assert out.choices[0].message.content and "<|im_end|>" not in out.choices[0].message.content


def test_streamed_chat_matches_the_unary_answer(client: openai.OpenAI) -> None:
    unary = client.chat.completions.create(model=SMOL, messages=HI, max_completion_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model=SMOL,
        messages=HI,
        max_completion_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == unary.choices[0].message.content
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == [unary.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == unary.usage
    assert len({c.id for c in chunks}) == 1


def test_streamed_chat_with_n_choices(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=SMOL, messages=HI, max_tokens=4, temperature=0.8, seed=3, n=2, stream=True
        )
    )
    roles = [c.choices[0].index for c in chunks if c.choices[0].delta.role == "assistant"]
    assert sorted(roles) == [0, 1]
    texts = {
        i: "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == i)
        for i in (0, 1)
    }
    unary = client.chat.completions.create(
        model=SMOL, messages=HI, max_tokens=4, temperature=0.8, seed=3, n=2
    )
    assert [c.message.content for c in unary.choices] == [texts[0], texts[1]]
    assert all(c.usage is None for c in chunks)  # no include_usage: no usage chunk


def test_streamed_chat_disconnect_frees_the_model(gateway: GatewayThread, http: httpx.Client) -> None:
    body = {"model": SMOL, "messages": HI, "max_tokens": 200, "stream": True}
    url = f"{gateway.gateway.addresses.http}/v1/chat/completions"
    with httpx.Client(timeout=120) as raw, raw.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk; the generation is running
    deadline = time.monotonic() + 60
    while http.get(f"/management/models/{SMOL}").json()["inflight"]:
        assert time.monotonic() < deadline, "the abandoned stream still holds the model"
        time.sleep(0.05)


# -- embeddings ---------------------------------------------------------------------------------
def test_embeddings_float_and_base64_match_the_caikit_route(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    texts = ["hello world", "a second text"]
    floats = client.embeddings.create(model=MINILM, input=texts, encoding_format="float")
    assert floats.object == "list" and floats.model == MINILM
    assert [d.index for d in floats.data] == [0, 1] and all(d.object == "embedding" for d in floats.data)
    caikit = http.post("/api/v1/task/embedding-tasks", json={"model_id": MINILM, "inputs": texts}).json()
    expected = np.array([v["data"]["values"] for v in caikit["results"]["vectors"]], dtype=np.float32)
    assert np.array_equal(np.array([d.embedding for d in floats.data], dtype=np.float32), expected)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == caikit["input_token_count"]

    raw = http.post(
        "/v1/embeddings", json={"model": MINILM, "input": texts, "encoding_format": "base64"}
    ).json()
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw["data"]])
    assert np.array_equal(decoded, expected)
    by_default = client.embeddings.create(model=MINILM, input="hello world")  # the client asks for base64
    assert np.array_equal(np.array(by_default.data[0].embedding, dtype=np.float32), expected[0])
    same_width = client.embeddings.create(model=MINILM, input="hello world", dimensions=384)
    assert len(same_width.data[0].embedding) == 384
