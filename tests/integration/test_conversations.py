"""Context for every client: stateless history matching, branches, ownership, one turn at a time, retries."""

from __future__ import annotations

import threading

import httpx2 as httpx
import pytest
import requests
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.conftest import Stack, body
from tests.support.stack import wait_for


def sdk(gateway: Stack, key: str = "sk-one", **kwargs) -> OpenAI:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 30)
    return OpenAI(base_url=gateway.url + "/v1", api_key=key, **kwargs)


def test_a_stateless_sdk_client_gets_one_upstream_conversation_over_five_turns(gateway: Stack) -> None:
    client = sdk(gateway)
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "You are terse."}]
    conversation_ids = set()
    for turn in range(1, 6):
        messages.append({"role": "user", "content": f"message {turn}"})
        raw = client.chat.completions.with_raw_response.create(model="Balanced", messages=messages)
        conversation_ids.add(raw.headers["X-Conversation-Id"])
        answer = raw.parse().choices[0].message.content
        assert answer == f"Hello! You said: message {turn}. This is turn {turn}."
        messages.append({"role": "assistant", "content": answer})
    [conversation_id] = conversation_ids
    assert gateway.upstream_users(conversation_id) == [f"message {n}" for n in range(1, 6)]
    if gateway.dialect == "bing":
        turns = gateway.upstream(conversation_id)["turns"]
        assert [t["isStartOfSession"] for t in turns] == [True, False, False, False, False]
    assert len(gateway.simulator.conversations()) == 1


def test_matching_tolerates_what_clients_change(gateway: Stack) -> None:
    first = gateway.post(body("  hello there  "))
    answer = first.json()["choices"][0]["message"]["content"]
    second = gateway.post(
        {
            "model": "Balanced",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
                {"role": "assistant", "content": "  " + answer + "\r\n"},
                {"role": "user", "content": "[sim:recall] again"},
            ],
        }
    )
    assert second.headers["X-Conversation-Id"] == first.headers["X-Conversation-Id"]
    assert second.json()["choices"][0]["message"]["content"] == "Earlier you said: hello there"


def test_an_edited_assistant_turn_is_not_matched(gateway: Stack) -> None:
    first = gateway.post(body("pick a colour"))
    second = gateway.post(
        {
            "model": "Balanced",
            "messages": [
                {"role": "user", "content": "pick a colour"},
                {"role": "assistant", "content": "Blue, edited by the user."},
                {"role": "user", "content": "[sim:recall] why?"},
            ],
        }
    )
    assert second.headers["X-Conversation-Id"] != first.headers["X-Conversation-Id"]
    context = gateway.upstream(second.headers["X-Conversation-Id"])["context"]
    assert "Blue, edited by the user." in context[0]


def test_regenerate_branches_and_the_original_stays_usable(gateway: Stack) -> None:
    def ask(history: list[dict], text: str) -> requests.Response:
        return gateway.post({"model": "Balanced", "messages": [*history, {"role": "user", "content": text}]})

    one = ask([], "first")
    a1 = one.json()["choices"][0]["message"]["content"]
    history = [{"role": "user", "content": "first"}, {"role": "assistant", "content": a1}]
    two = ask(history, "second")
    original = two.headers["X-Conversation-Id"]
    a2 = two.json()["choices"][0]["message"]["content"]

    regenerated = ask(history, "second")  # the client regenerates the second answer
    branch = regenerated.headers["X-Conversation-Id"]
    assert branch != original
    assert (
        regenerated.json()["choices"][0]["message"]["content"] == "Hello! You said: second. This is turn 1."
    )
    assert "[user](#message)\nfirst" in gateway.upstream(branch)["context"][0]

    # The original branch continues where it was, on its own upstream conversation.
    three = ask(
        [*history, {"role": "user", "content": "second"}, {"role": "assistant", "content": a2}], "third"
    )
    assert three.headers["X-Conversation-Id"] == original
    assert gateway.upstream_users(original) == ["first", "second", "third"]


def test_another_key_can_neither_continue_match_nor_read(gateway: Stack) -> None:
    mine = gateway.post(body("secret"), headers={"Authorization": "Bearer sk-alice"})
    conversation_id = mine.headers["X-Conversation-Id"]
    bob = {"Authorization": "Bearer sk-bob"}
    by_id = gateway.post(body("peek", id=conversation_id), headers=bob)
    unknown = gateway.post(body("peek", id="conv_doesnotexist000000000000"), headers=bob)
    assert by_id.status_code == unknown.status_code == 404
    assert by_id.json()["error"]["code"] == unknown.json()["error"]["code"] == "conversation_not_found"
    answer = mine.json()["choices"][0]["message"]["content"]
    matched = gateway.post(
        {
            "model": "Balanced",
            "messages": [
                {"role": "user", "content": "secret"},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "[sim:recall] ?"},
            ],
        },
        headers=bob,
    )
    assert matched.headers["X-Conversation-Id"] != conversation_id
    read = requests.get(f"{gateway.url}/v1/conversations/{conversation_id}", headers=bob, timeout=5)
    assert read.status_code == 404
    own = requests.get(
        f"{gateway.url}/v1/conversations/{conversation_id}/items?order=asc",
        headers={"Authorization": "Bearer sk-alice"},
        timeout=5,
    )
    assert [m["content"][0]["text"] for m in own.json()["data"]] == ["secret", answer]


def test_deleted_conversation_is_forgotten(gateway: Stack) -> None:
    first = gateway.post(body("forget me"))
    conversation_id = first.headers["X-Conversation-Id"]
    assert requests.delete(f"{gateway.url}/v1/conversations/{conversation_id}", timeout=5).json()["deleted"]
    assert gateway.post(body("still there?", id=conversation_id)).status_code == 404
    # Its history is not recognised any more either: a stateless client starts afresh.
    answer = first.json()["choices"][0]["message"]["content"]
    history = [{"role": "user", "content": "forget me"}, {"role": "assistant", "content": answer}]
    again = gateway.post({"model": "Balanced", "messages": [*history, {"role": "user", "content": "hello?"}]})
    assert again.status_code == 200
    assert again.headers["X-Conversation-Id"] != conversation_id


def test_concurrent_turns_on_one_conversation_are_serialized(gateway: Stack) -> None:
    first = gateway.post(body("start"))
    conversation_id = first.headers["X-Conversation-Id"]
    results: dict[str, requests.Response] = {}

    def send(name: str, text: str) -> None:
        results[name] = gateway.post(body(text, conversation_id=conversation_id))

    slow = threading.Thread(target=send, args=("slow", "[sim:slow=0.2][sim:long=8] A"))
    slow.start()
    wait_for(
        lambda: gateway.simulator.stats()["busy_sockets"] >= 1
    )  # the slow turn holds the conversation now
    quick = threading.Thread(target=send, args=("quick", "[sim:recall] B"))
    quick.start()
    slow.join(30)
    quick.join(30)
    assert results["slow"].status_code == results["quick"].status_code == 200
    # The second waited for the first and saw it in the conversation.
    recall = results["quick"].json()["choices"][0]["message"]["content"]
    assert recall == "Earlier you said: start | [sim:slow=0.2][sim:long=8] A"
    assert len(gateway.upstream_users(conversation_id)) == 3


@pytest.mark.dialects("bing", reason="Copilot reports no per-conversation turn counters")
def test_turns_remaining_are_reported(gateway: Stack) -> None:
    gateway.simulator.configure(max_turns=4)
    first = gateway.post(body("one"))
    assert first.headers["X-Conversation-Turns-Remaining"] == "3"
    second = gateway.post(body("two", id=first.json()["id"]), stream=True)
    assert second.headers["X-Conversation-Turns-Remaining"] == "2"


def test_an_sdk_retry_with_an_idempotency_key_reaches_the_upstream_once(gateway: Stack) -> None:
    # The first attempt times out client-side while the turn keeps running; the SDK's
    # retries carry the same Idempotency-Key and attach to it.
    attempts: list[str] = []
    http_client = httpx.Client(event_hooks={"request": [lambda request: attempts.append(request.url.path)]})
    client = sdk(gateway, max_retries=3, timeout=1.5, http_client=http_client)
    completion = client.chat.completions.create(
        model="Balanced",
        messages=[{"role": "user", "content": "[sim:slow=0.4][sim:long=6] once"}],
        extra_headers={"Idempotency-Key": f"retry-me-{gateway.dialect}"},
    )
    assert completion.choices[0].message.content == "w1 w2 w3 w4 w5 w6"
    assert len(attempts) >= 2  # the SDK really did retry
    assert gateway.simulator.stats()["invocations"] == 1


def test_an_idempotent_request_replays_its_result(gateway: Stack) -> None:
    headers = {"Idempotency-Key": f"replay-{gateway.dialect}"}
    first = gateway.post(body("only once"), headers=headers)
    again = gateway.post(body("only once"), headers=headers)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["choices"] == first.json()["choices"]
    assert again.headers["X-Conversation-Id"] == first.headers["X-Conversation-Id"]
    assert gateway.simulator.stats()["invocations"] == 1
    streamed = gateway.post(body("only once"), headers=headers)  # same body bytes
    assert streamed.json()["id"] == first.json()["id"]


def test_an_idempotency_key_with_another_body_is_rejected(gateway: Stack) -> None:
    headers = {"Idempotency-Key": f"reuse-{gateway.dialect}"}
    assert gateway.post(body("one body"), headers=headers).status_code == 200
    other = gateway.post(body("another body"), headers=headers)
    assert other.status_code == 400
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_failed_idempotent_request_runs_again_on_retry(gateway: Stack) -> None:
    headers = {"Idempotency-Key": f"fails-{gateway.dialect}"}
    assert gateway.post(body("[sim:throttled] x"), headers=headers).status_code == 429
    assert gateway.post(body("[sim:throttled] x"), headers=headers).status_code == 429
    assert gateway.simulator.stats()["invocations"] == 2


@pytest.mark.parametrize("stream", [False, True])
def test_branch_of_a_branch_keeps_its_own_context(gateway: Stack, stream: bool) -> None:
    first = gateway.post(body("alpha"))
    a1 = first.json()["choices"][0]["message"]["content"]
    edited = [{"role": "user", "content": "alpha"}, {"role": "assistant", "content": a1 + " (edited)"}]
    response = gateway.post(
        {
            "model": "Balanced",
            "stream": stream,
            "messages": [*edited, {"role": "user", "content": "[sim:recall] ?"}],
        },
        stream=stream,
    )
    assert response.status_code == 200
    assert response.headers["X-Conversation-Id"] != first.headers["X-Conversation-Id"]
