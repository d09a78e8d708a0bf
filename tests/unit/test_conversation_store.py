"""The conversation store, locks and idempotency claims against a real redis-server."""

from __future__ import annotations

import time

from redis import Redis

from service.state import idempotency, locks
from service.state.conversations import Conversation, ConversationStore, Match, fingerprint, handle_key

U1 = {"role": "user", "content": "hi"}
A1 = {"role": "assistant", "content": "Hello!"}
U2 = {"role": "user", "content": "more"}
A2 = {"role": "assistant", "content": "Sure."}


def store(redis: Redis, **kwargs) -> ConversationStore:
    return ConversationStore(redis, ttl=kwargs.pop("ttl", 600), **kwargs)


def test_fingerprint_ignores_what_clients_change_and_nothing_else() -> None:
    base = fingerprint("Be nice.", [U1, A1])
    assert fingerprint(" Be nice.\n", [{"role": "user", "content": " hi\r\n"}, A1]) == base
    assert fingerprint("Be nice.", [U1, {"role": "assistant", "content": "Hello!!"}]) != base
    assert fingerprint("Be mean.", [U1, A1]) != base
    assert fingerprint("Be nice.", [{"role": "assistant", "content": "hi"}, A1]) != base
    assert fingerprint("", [{"role": "user", "content": "a b"}]) != fingerprint(
        "", [{"role": "user", "content": "a  b"}]
    )


def test_every_completed_prefix_matches_with_its_turn_count(redis_client: Redis) -> None:
    conversations = store(redis_client)
    conversation = Conversation(id="conv_1", owner="o", model="Balanced", system="S", messages=[U1, A1])
    conversations.save(conversation, completion_id="chatcmpl-1")
    conversation.messages += [U2, A2]
    conversations.save(conversation, completion_id="chatcmpl-2")

    assert conversations.match("o", [U1, A1, U2, A2]) == Match("conv_1", 2)
    assert conversations.match("o", [U1, A1]) == Match("conv_1", 1)  # an earlier point: a branch
    assert conversations.match("someone-else", [U1, A1]) is None
    assert conversations.match("o", [U1, {"role": "assistant", "content": "Hello!!"}]) is None
    assert conversations.match("o", []) is None
    # The system prompt is not part of the match: a changed one is sent upstream, not a new start.
    trimmed = [{"role": "user", "content": " hi "}, A1]
    assert conversations.match("o", trimmed) == Match("conv_1", 1)
    assert conversations.resolve("chatcmpl-1") == "conv_1"


def test_the_handle_lives_no_longer_than_the_upstream_allows(redis_client: Redis) -> None:
    conversations = store(redis_client, handle_ttl=3600)
    soon = Conversation(
        id="conv_h", owner="o", model="m", messages=[U1, A1], handle={"expires_at": time.time() + 30}
    )
    conversations.save(soon)
    assert 0 < redis_client.ttl(handle_key("conv_h")) <= 30
    assert redis_client.ttl("conv:conv_h") > 500
    later = Conversation(id="conv_l", owner="o", model="m", messages=[U1, A1], handle={"dialect": "copilot"})
    conversations.save(later)
    assert 3500 < redis_client.ttl(handle_key("conv_l")) <= 3600

    redis_client.delete(handle_key("conv_h"))  # the upstream conversation is gone ...
    reloaded = conversations.get("conv_h")
    assert reloaded is not None and reloaded.handle is None  # ... the transcript is not
    assert reloaded.messages == [U1, A1]


def test_delete_forgets_the_conversation_and_its_handle(redis_client: Redis) -> None:
    conversations = store(redis_client)
    conversations.save(Conversation(id="conv_d", owner="o", model="m", messages=[U1, A1], handle={"x": 1}))
    assert conversations.delete("conv_d")
    assert conversations.get("conv_d") is None
    assert conversations.match("o", [U1, A1]) is None
    assert not redis_client.exists(handle_key("conv_d"))


def test_a_lock_is_exclusive_expires_and_only_its_holder_frees_it(redis_client: Redis) -> None:
    token = locks.acquire(redis_client, "c", ttl=0.3, wait=0)
    assert token is not None
    assert locks.acquire(redis_client, "c", ttl=5, wait=0) is None
    assert not locks.release(redis_client, "c", "not-the-token")
    assert locks.refresh(redis_client, "c", token, ttl=0.3)
    later = locks.acquire(redis_client, "c", ttl=5, wait=2)  # waits out the expiry
    assert later is not None and later != token
    assert not locks.refresh(redis_client, "c", token, ttl=5)
    assert locks.release(redis_client, "c", later)


def test_an_idempotency_key_is_claimed_once_per_owner(redis_client: Redis) -> None:
    mine = idempotency.Claim("chatcmpl-a", idempotency.body_digest(b"{}"), created=1)
    assert idempotency.claim(redis_client, "o", "k", mine, ttl=60) is None
    theirs = idempotency.Claim("chatcmpl-b", idempotency.body_digest(b"{}"))
    assert idempotency.claim(redis_client, "o", "k", theirs, ttl=60) == mine
    assert idempotency.claim(redis_client, "other-owner", "k", theirs, ttl=60) is None
    idempotency.record(redis_client, "o", "k", idempotency.Claim("chatcmpl-a", mine.body, "conv_x", 1))
    recorded = idempotency.claim(redis_client, "o", "k", theirs, ttl=60)
    assert recorded is not None and recorded.conversation_id == "conv_x"
    idempotency.release(redis_client, "o", "k", "chatcmpl-b")  # not its claim: kept
    assert idempotency.claim(redis_client, "o", "k", theirs, ttl=60) is not None
    idempotency.release(redis_client, "o", "k", "chatcmpl-a")
    assert idempotency.claim(redis_client, "o", "k", theirs, ttl=60) is None
