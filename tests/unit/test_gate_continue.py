"""A continued conversation and an Idempotency-Key through the gate's one script
(`service.web.pipeline.gate_continue`), in the Flask app over a real Redis, no worker: the
script locks the conversation and queues the turn, and what it cannot decide (another
owner's id, a busy lock, a history that is not the transcript, a claimed key) is decided the
old way with the same answers, the key's request counted as before."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from service.images import image_key
from service.state import idempotency, locks
from service.state.conversations import Conversation, ConversationStore, owner_of
from service.turns import TurnRequest, grant_hint_key
from tests.integration.test_images import screenshot_png
from tests.support.stack import wait_for
from tests.unit.test_gate import gate_client
from tests.unit.test_web_app import SECRET

KEY = "sk-gate-continue-0123456789"
QUEUE = "gate-continue-test"
OWNER = owner_of(KEY, secret=SECRET)
TRANSCRIPT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
NEXT = {"role": "user", "content": "and then?"}


@pytest.fixture()
def client(redis_url: str, redis_client: Redis) -> FlaskClient:
    """One account, a key allowed three requests a minute, no worker (turns stay queued)."""
    return gate_client(redis_url, redis_client, queue=QUEUE, key=KEY, rpm=3, wait=1)


@pytest.fixture()
def stored(redis_client: Redis) -> Iterator[str]:
    """The key's conversation, one turn long (answered by completion `chatcmpl-first`)."""
    conversation = Conversation(id="conv_gatecontinue", owner=OWNER, model="gpt-4", messages=TRANSCRIPT)
    ConversationStore(redis_client, ttl=3600).save(conversation, completion_id="chatcmpl-first")
    yield conversation.id


def _post(
    client: FlaskClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, str]:
    answer = client.post(
        "/v1/chat/completions",
        json={"model": "gpt-4", **body},
        headers={"Authorization": f"Bearer {KEY}", **(headers or {})},
    )
    return answer.status_code, answer.get_data(as_text=True)


def _queued(
    client: FlaskClient, redis: Redis, body: dict[str, Any], **kw: Any
) -> tuple[TurnRequest, threading.Thread]:
    """Send `body` in a thread; the turn it queued (there is no worker to run it)."""
    sent = threading.Thread(target=_post, args=(client, body), kwargs=kw)
    sent.start()
    queue = Queue(QUEUE, connection=redis)
    (job_id,) = wait_for(lambda: queue.job_ids or None)
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    return TurnRequest.from_json(job.args[0]), sent


@pytest.mark.parametrize("by", ["conversation_id", "id", "history"])
def test_a_continued_turn_is_queued_holding_its_lock(
    client: FlaskClient, redis_client: Redis, stored: str, by: str
) -> None:
    bodies: dict[str, dict[str, Any]] = {
        "conversation_id": {"conversation_id": stored, "messages": [NEXT]},
        "id": {"id": "chatcmpl-first", "messages": [NEXT]},
        "history": {"messages": [*TRANSCRIPT, NEXT]},
    }
    turn, sent = _queued(client, redis_client, bodies[by])
    assert turn.continues and turn.conversation_id == stored and turn.history == []
    assert redis_client.get(locks.lock_key(stored)) == turn.lock_token.encode()
    hint = redis_client.hgetall(grant_hint_key(turn.completion_id))
    assert hint == {b"owner": OWNER.encode(), b"group": b"default", b"conv": stored.encode(), b"pref": b"1"}
    sent.join(10)


def test_another_transcript_branches_as_before(client: FlaskClient, redis_client: Redis, stored: str) -> None:
    edited = [TRANSCRIPT[0], {"role": "assistant", "content": "an edited answer"}]
    body = {"conversation_id": stored, "messages": [*edited, NEXT]}
    turn, sent = _queued(client, redis_client, body)
    assert not turn.continues and turn.conversation_id != stored and turn.history == edited
    assert redis_client.get(locks.lock_key(stored)) is None  # the script did not take it
    sent.join(10)


def test_another_owners_conversation_is_a_404_counted_against_the_key(
    client: FlaskClient, redis_client: Redis
) -> None:
    theirs = Conversation(id="conv_theirs", owner="someone-else", model="gpt-4", messages=TRANSCRIPT)
    ConversationStore(redis_client, ttl=3600).save(theirs)
    for _ in range(3):
        status, text = _post(client, {"conversation_id": theirs.id, "messages": [NEXT]})
        assert status == 404 and "conversation_not_found" in text
    status, text = _post(client, {"conversation_id": theirs.id, "messages": [NEXT]})
    assert status == 429, text  # the failed lookups counted: the key's three a minute are spent
    assert redis_client.get(locks.lock_key(theirs.id)) is None
    assert not Queue(QUEUE, connection=redis_client).job_ids


def test_a_busy_conversation_waits_for_its_lock(
    client: FlaskClient, redis_client: Redis, stored: str
) -> None:
    held = locks.acquire(redis_client, stored, ttl=30, wait=0)
    assert held is not None
    sent = threading.Thread(target=_post, args=(client, {"conversation_id": stored, "messages": [NEXT]}))
    sent.start()
    queue = Queue(QUEUE, connection=redis_client)
    time.sleep(0.3)
    assert not queue.job_ids  # waiting behind the lock, not queued
    locks.release(redis_client, stored, held)
    (job_id,) = wait_for(lambda: queue.job_ids or None)
    turn = TurnRequest.from_json(
        Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer).args[0]
    )
    assert turn.continues and turn.lock_token not in ("", held)
    assert redis_client.get(locks.lock_key(stored)) == turn.lock_token.encode()
    sent.join(10)


def test_an_idempotency_key_is_claimed_with_its_conversation_known(
    client: FlaskClient, redis_client: Redis, stored: str
) -> None:
    headers = {"Idempotency-Key": "gate-claim-1"}
    turn, sent = _queued(
        client, redis_client, {"conversation_id": stored, "messages": [NEXT]}, headers=headers
    )
    claim = idempotency.lookup(redis_client, OWNER, "gate-claim-1")
    assert claim is not None and (claim.completion_id, claim.conversation_id) == (turn.completion_id, stored)
    assert redis_client.ttl(idempotency.claim_key(OWNER, "gate-claim-1")) > 0
    # While it runs, the same key with another body is refused; the claim stays the first request's.
    status, text = _post(client, {"conversation_id": stored, "messages": [NEXT, NEXT]}, headers)
    assert status == 400 and "idempotency_key_reused" in text
    assert idempotency.lookup(redis_client, OWNER, "gate-claim-1") == claim
    sent.join(10)


def test_a_refused_turn_parks_no_image(client: FlaskClient, redis_client: Redis) -> None:
    """The image's bytes are parked by the gate's script only once its checks passed."""
    for _ in range(3):  # the key's three requests this minute, spent on lookups that fail
        assert _post(client, {"conversation_id": "conv_nobody", "messages": [NEXT]})[0] == 404
    png = base64.b64encode(screenshot_png(32, 24)).decode()
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
    ]
    status, text = _post(client, {"messages": [{"role": "user", "content": content}]})
    assert status == 429, text
    assert list(redis_client.scan_iter(match=image_key("*"))) == []
    assert not Queue(QUEUE, connection=redis_client).job_ids
