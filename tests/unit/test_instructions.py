"""Changed instructions (workers.instructions) and the `store: false` digest entries (service.ephemeral)."""

from __future__ import annotations

import time

from redis import Redis

from service.state import ephemeral
from workers.instructions import CHANGED, REMOVED, REPLACED, update_block

RULES = "".join(f"rule {i}: be careful.\n" for i in range(30))
U1 = {"role": "user", "content": "hi"}
A1 = {"role": "assistant", "content": "Hello!"}


def test_an_unchanged_system_prompt_sends_nothing() -> None:
    assert update_block(RULES, RULES) == ""
    assert update_block(RULES, f"  {RULES}\r\n") == ""  # what clients change in transit


def test_a_changed_system_prompt_sends_only_the_changed_lines() -> None:
    block = update_block(RULES + "Use tabs.", RULES + "Use spaces.\nAnd be brief.")
    assert block.startswith(CHANGED)
    assert block.splitlines()[1:] == ["- Use tabs.", "+ Use spaces.", "+ And be brief."]
    assert "rule 7" not in block


def test_the_whole_text_when_shorter_or_the_old_one_is_unknown() -> None:
    assert update_block("Be brief.", "Be verbose.") == f"{REPLACED}\nBe verbose."
    assert update_block(None, RULES) == f"{REPLACED}\n{RULES.strip()}"
    assert update_block(RULES, "") == REMOVED


def test_a_digest_entry_is_taken_once_and_holds_no_text(redis_client: Redis) -> None:
    carried = ephemeral.Carried({"conversation_id": "up-1", "expires_at": time.time() + 60}, "d1")
    with redis_client.pipeline(transaction=True) as pipe:
        ephemeral.remember(pipe, "owner", "secret", [U1, A1], carried, ttl=3600)
        pipe.execute()
    (key,) = redis_client.keys("digest:*")
    assert 0 < redis_client.ttl(key) <= 60  # no longer than the upstream conversation lives
    assert b"hi" not in key and b"Hello" not in redis_client.get(key)  # type: ignore[operator]
    assert ephemeral.take(redis_client, "other-owner", "secret", [U1, A1]) is None
    assert ephemeral.take(redis_client, "owner", "other-secret", [U1, A1]) is None
    assert (
        ephemeral.take(redis_client, "owner", "secret", [{"role": "user", "content": " hi "}, A1]) == carried
    )
    assert ephemeral.take(redis_client, "owner", "secret", [U1, A1]) is None  # taken
    assert ephemeral.instructions_digest("secret", "Be brief.") != ephemeral.instructions_digest(
        "s2", "Be brief."
    )
    assert ephemeral.instructions_digest("secret", "  ") == ""
