"""Fewest upstream turns for agent clients: `store: false` continued by digest, changed
instructions sent to the upstream instead of a new start, both dialects, real SDKs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

from service.state.conversations import owner_of
from tests.integration.conftest import Stack


@pytest.fixture()
def client(gateway: Stack) -> OpenAI:
    # A key of its own: the stacks of both dialects share one Redis, and histories repeat.
    key = f"sk-agents-{uuid.uuid4().hex}"
    return OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture()
def claude(gateway: Stack) -> Iterator[Anthropic]:
    key = f"sk-agents-{uuid.uuid4().hex}"
    with Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=60) as made:
        yield made


RULES = "Be terse.\n" + "".join(f"rule {i}: keep answers short and plain.\n" for i in range(20))


def turns(gateway: Stack) -> int:
    return int(gateway.simulator.stats()["invocations"])


def creates(gateway: Stack) -> int:
    return int(gateway.simulator.stats()["creates"])


def last_text(gateway: Stack) -> str:
    """The text of the last turn the upstream received."""
    sent = gateway.last_request()
    if gateway.dialect == "bing":
        return str(sent["message"]["text"])
    return str([part for part in sent["content"] if part.get("type") == "text"][-1]["text"])


def text_of(message: Any) -> str:
    return str(message.content[0].text)


def said(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "output_text", "text": text}]}


def test_store_false_continues_its_upstream_conversation_by_digest(client: OpenAI, gateway: Stack) -> None:
    start_turns, start_creates = turns(gateway), creates(gateway)
    history: list[Any] = [{"role": "user", "content": "my name is Ada"}]
    first = client.responses.create(model="Balanced", instructions="Be brief.", input=history, store=False)
    history += [said(first.output_text), {"role": "user", "content": "[sim:recall] who am I?"}]
    second = client.responses.create(model="Balanced", instructions="Be brief.", input=history, store=False)
    # The same upstream conversation (it remembers the first turn), one upstream turn for the request.
    assert second.output_text.startswith("Earlier you said: my name is Ada")
    assert (turns(gateway) - start_turns, creates(gateway) - start_creates) == (2, 1)
    # Nothing readable: no response, no conversation, no transcript; only keyed digests, no text.
    for response in (first, second):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response.id)
        assert gateway.redis.get(f"completion:{response.id}") is None
    owner = owner_of(client.api_key, secret=gateway.env["SECRET_KEY"])
    names = [bytes(key).decode() for key in gateway.redis.scan_iter("*")]
    documents = [
        gateway.redis.get(name) for name in names if name.startswith("conv:") and name.count(":") == 1
    ]
    assert not [d for d in documents if d and json.loads(d).get("owner") == owner]
    # Of what names the key's owner, only the digest entries are left.
    assert {name.split(":")[0] for name in names if owner in name} == {"digest"}
    entries = [name for name in names if name.startswith(f"digest:{owner}:")]
    assert len(entries) == 1  # each entry is taken by the request that continues it
    value = str(gateway.redis.get(entries[0]))
    assert "Ada" not in value and "brief" not in value and "recall" not in value
    # Changed instructions reach the upstream (the old text was never kept: the whole new one).
    history += [said(second.output_text), {"role": "user", "content": "and now?"}]
    third = client.responses.create(model="Balanced", instructions="Be verbose.", input=history, store=False)
    assert third.output_text.startswith("Hello! You said: and now?.")
    sent = last_text(gateway)
    assert sent.startswith("[Updated instructions.") and "Be verbose." in sent and sent.endswith("and now?")
    assert creates(gateway) - start_creates == 1


def test_a_history_continued_twice_by_digest_starts_afresh_the_second_time(
    client: OpenAI, gateway: Stack
) -> None:
    history: list[Any] = [{"role": "user", "content": "hello"}]
    first = client.responses.create(model="Balanced", input=history, store=False)
    history += [said(first.output_text), {"role": "user", "content": "again"}]
    before = creates(gateway)
    client.responses.create(model="Balanced", input=history, store=False)
    assert creates(gateway) == before  # continued
    client.responses.create(model="Balanced", input=history, store=False)  # the same history once more
    assert creates(gateway) == before + 1  # never two turns into one upstream conversation


def test_a_changed_system_prompt_reaches_the_upstream_of_a_matched_conversation(
    claude: Anthropic, gateway: Stack
) -> None:
    start_creates = creates(gateway)
    history: list[Any] = [{"role": "user", "content": "my name is Ada"}]
    first = claude.messages.create(
        model="Balanced", max_tokens=64, system=RULES + "Rule A.", messages=history
    )
    history += [
        {"role": "assistant", "content": text_of(first)},
        {"role": "user", "content": "what next?"},
    ]
    before = turns(gateway)
    raw = claude.messages.with_raw_response.create(
        model="Balanced", max_tokens=64, system=RULES + "Rule B.", messages=history
    )
    # Matched on the messages: the same upstream conversation, one turn, the change sent first.
    assert text_of(raw.parse()) == "Hello! You said: what next?. This is turn 2."
    assert turns(gateway) - before == 1 and creates(gateway) - start_creates == 1
    sent = last_text(gateway)
    assert sent.startswith("[Updated instructions.") and "- Rule A." in sent and "+ Rule B." in sent
    assert "Be terse." not in sent and "rule 7" not in sent  # only the changed lines
    conversation_id = raw.headers["X-Conversation-Id"]
    stored = gateway.redis.get(f"conv:{conversation_id}")
    assert stored is not None and b"Rule B." in stored
    # Claude Code 2.1.197: a `system` message after the user's joins the instructions; the turn still
    # carries the user's question, and the conversation goes on.
    history += [
        {"role": "assistant", "content": text_of(raw.parse())},
        {"role": "user", "content": "third question"},
        {"role": "system", "content": "<system-reminder>a todo list</system-reminder>"},
    ]
    third = claude.messages.create(
        model="Balanced", max_tokens=64, system=RULES + "Rule B.", messages=history
    )
    assert text_of(third) == "Hello! You said: third question. This is turn 3."
    sent = last_text(gateway)
    assert "+ <system-reminder>a todo list</system-reminder>" in sent and sent.endswith("third question")
    assert creates(gateway) - start_creates == 1
    # The same instructions again (the reminder moves to the end): nothing extra goes upstream.
    history = [m for m in history if m["role"] != "system"]
    history += [
        {"role": "assistant", "content": text_of(third)},
        {"role": "user", "content": "fourth"},
        {"role": "system", "content": "<system-reminder>a todo list</system-reminder>"},
    ]
    claude.messages.create(model="Balanced", max_tokens=64, system=RULES + "Rule B.", messages=history)
    assert last_text(gateway) == "fourth", last_text(gateway)


HOSTED_RESPONSES = [
    {"type": "web_search"},
    {"type": "local_shell"},
    {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
    {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}},
]
HOSTED_MESSAGES = [
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    {"name": "Read", "input_schema": {"type": "object", "properties": {}}},
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_hosted_tools_left_out_are_named_once_per_response(gateway: Stack, stream: bool) -> None:
    key = {"Authorization": f"Bearer sk-agents-{uuid.uuid4().hex}"}
    responses = gateway.post(
        {"model": "Balanced", "input": "hi", "tools": HOSTED_RESPONSES, "stream": stream},
        "/v1/responses",
        headers=key,
        stream=stream,
    )
    messages = gateway.post(
        {"model": "Balanced", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
        | {"tools": HOSTED_MESSAGES, "stream": stream},
        "/v1/messages",
        headers=key,
        stream=stream,
    )
    for answer, listed in (
        (responses, "web_search, local_shell, custom:apply_patch"),
        (messages, "web_search_20250305:web_search"),
    ):
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Gateway-Unoffered-Tools"] == listed
        if stream:
            lines = answer.text.splitlines()
            notes = [line for line in lines if line.startswith(":") and "not offered" in line]
            assert notes == [f": gateway: hosted tools not offered to the model: {listed}"]
            assert lines[0] == notes[0]
        else:
            assert answer.json()["content" if answer is messages else "output"]
    plain = gateway.post({"model": "Balanced", "input": "hi"}, "/v1/responses", headers=key)
    assert "X-Gateway-Unoffered-Tools" not in plain.headers
