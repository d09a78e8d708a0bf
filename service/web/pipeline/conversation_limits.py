"""Per-key limits on what a key stores: Conversations API writes and stored conversations.

A turn is admitted by `service.web.pipeline.quota`; the Conversations API's writes (create, and
metadata updates) store data without running a turn, so they used to bypass every limit:
one key with rpm = 1 created 100 conversations (38 MB) in 1.4 s. Now:

- each write counts as one request against the key's rpm and is refused once its daily
  token quota is spent (no turn slot: nothing runs);
- a key keeps at most KEY_MAX_CONVERSATIONS conversations at once (every surface's new
  conversations count, not only the Conversations API's); one more is a 429
  `conversation_limit_exceeded` until it deletes some or they expire.
"""

from __future__ import annotations

import dataclasses

from flask import g

from service.access import ratelimit
from service.access.ratelimit import Caller
from service.errors import RateLimited
from service.runtime import metrics
from service.web.http.extension import Gateway

WRITE_LEASE_SECONDS = 1.0  # never used: a write takes no turn slot (max_concurrent is 0 for it)


class ConversationLimit(RateLimited):
    """The key already keeps as many conversations as KEY_MAX_CONVERSATIONS allows."""

    code = "conversation_limit_exceeded"


def admit_write(gw: Gateway) -> None:
    """Count one Conversations API write against the caller's rpm and quota; 429 when over."""
    caller: Caller | None = g.get("caller")
    if caller is None or caller.id == "open":
        return
    if not (caller.limits.rpm or caller.limits.tokens_per_day):
        return  # nothing to count against (usage of writes is not recorded separately)
    writer = Caller(caller.id, caller.owner, dataclasses.replace(caller.limits, max_concurrent=0))
    decision = ratelimit.admit(gw.redis, writer, lease_seconds=WRITE_LEASE_SECONDS)
    g.rate = decision
    error = decision.error(writer)
    if error is not None:
        limit = "rpm" if decision.status == ratelimit.RPM else "tokens_per_day"
        metrics.KEY_LIMITED.labels(limit=limit).inc()
        raise error


def check_room(gw: Gateway, owner: str) -> None:
    """429 if the caller's key already keeps KEY_MAX_CONVERSATIONS conversations (0 = no limit).

    Only keys are capped: an open gateway (no API_KEYS) has no key to hold to a share.
    """
    cap = gw.settings.key_max_conversations
    caller: Caller | None = g.get("caller")
    if cap <= 0 or caller is None or caller.id == "open":
        return
    kept = g.get("owned_count")  # read with the key's quota (`quota.admit`), same round trip
    if kept is None:
        kept = gw.store.count_owned(owner)
    if kept >= cap:
        raise over_limit(kept, cap)


def over_limit(kept: int, cap: int) -> ConversationLimit:
    """The 429 for a new conversation of a key that keeps `kept` of its `cap` already (counted)."""
    metrics.KEY_LIMITED.labels(limit="max_conversations").inc()
    return ConversationLimit(
        f"This API key already keeps {kept} conversations, the most it may keep at once "
        f"(KEY_MAX_CONVERSATIONS={cap}). Delete some (DELETE /v1/conversations/{{id}}) "
        "or wait for them to expire.",
        should_retry=False,
    )
