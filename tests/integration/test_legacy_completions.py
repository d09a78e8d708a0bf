"""The legacy Completions API with openai-python: `client.completions.create(prompt=…)` (issue #17).

It used to be a 400 "Missing messages". Served on /v1/completions and /completions in the
`text_completion` shape, streamed too, through the same turn pipeline as every surface.
"""

from __future__ import annotations

import openai
import pytest
import requests
from openai import OpenAI

from tests.integration.conftest import Stack

EXPECTED = "Hello! You said: legacy hello. This is turn 1."


@pytest.fixture()
def client(gateway: Stack) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


def test_a_prompt_is_answered_as_a_text_completion(client: OpenAI) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="legacy hello")
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    (choice,) = completion.choices
    assert choice.text == EXPECTED and choice.index == 0 and choice.finish_reason == "stop"
    assert choice.logprobs is None
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_a_streamed_prompt_arrives_as_text_completion_chunks(client: OpenAI) -> None:
    chunks = list(
        client.completions.create(
            model="copilot",
            prompt="legacy hello",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {chunk.object for chunk in chunks} == {"text_completion"}
    assert "".join(c.choices[0].text for c in chunks if c.choices) == EXPECTED
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_echo_max_tokens_and_the_bare_path(gateway: Stack, client: OpenAI) -> None:
    cut = client.completions.create(model="copilot", prompt="[sim:long=40] count", max_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    echoed = client.completions.create(model="copilot", prompt="legacy hello", echo=True)
    assert echoed.choices[0].text == "legacy hello" + EXPECTED
    bare = requests.post(
        f"{gateway.url}/completions", json={"model": "copilot", "prompt": "legacy hello"}, timeout=60
    )
    assert bare.status_code == 200 and bare.json()["choices"][0]["text"] == EXPECTED


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2]}, "prompt"),
        ({"logprobs": 2}, "logprobs"),
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"n": 2}, "n"),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(client: OpenAI, extra: dict, param: str) -> None:
    body = {"model": "copilot", "prompt": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(**body)
    assert isinstance(raised.value.body, dict) and raised.value.body["param"] == param


def test_a_chat_body_sent_to_the_legacy_path_is_told_where_it_belongs(gateway: Stack) -> None:
    answer = requests.post(
        f"{gateway.url}/v1/completions",
        json={"model": "copilot", "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "messages" and "/v1/chat/completions" in error["message"]
