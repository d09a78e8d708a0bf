"""The web tier's one Redis round trip before the queue: the door, the key's quota, the room for a
new conversation and RQ's enqueue, in one script (`service.state.gated`).

Each check used to be its own round trip before the enqueue (door → quota → enqueue: three
on the path to the first token). Now `prepare` does what needs no Redis while the request
is read (the 403 for a model the key may not use, the 503 for an empty account group, both
from memory), and `enqueue` runs the checks and the enqueue together once the turn is
built; a refusal is the same 429 each check raised on its own, in the same order (door,
then quota, then room), with what the checks wrote kept as before (the door's claim, the
key's ticket: the request's teardown settles it).

Only a turn with nothing between its checks and its enqueue takes this path: a new
conversation (no id, no history to match or carry) without an Idempotency-Key or images.
Anything else reads or writes first (a claim, parked images, the conversation's lock, a
history match that consumes a `store: false` digest) and may fail there, so it is checked
and counted first, as a turn always was (`submit`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from service.access import ratelimit
from service.access.ratelimit import Caller
from service.accounts import admission as door_admission
from service.accounts import door
from service.errors import UpstreamUnavailable
from service.runtime import metrics
from service.state import gated, streams
from service.state.conversations import owned_key
from service.turns import TurnRequest, enqueue_turn_in
from service.web.http.extension import Gateway
from service.web.pipeline import admission, quota
from service.web.pipeline import conversation_limits as limits

ROOM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local kept = redis.call('ZCARD', KEYS[1])
if kept < tonumber(ARGV[1]) then return {1, kept} end
return {0, kept}
"""
"""Room for one more conversation of the key (`conversation_limits`, KEY_MAX_CONVERSATIONS)."""


@dataclasses.dataclass(frozen=True)
class Gate:
    """What the checks need, taken from the request before the turn is built."""

    owner: str
    group: str
    caller: Caller | None  # None: no key limits to check
    turns: int


def prepare(gw: Gateway, owner: str, group: str, caller: Caller | None, model: str, turns: int) -> Gate:
    """The checks that need no Redis, now (403 model, 503 empty group); the rest waits for `enqueue`."""
    try:
        door_admission.check_group(admission.registry(), group)
    except UpstreamUnavailable:
        metrics.GROUP_UNAVAILABLE.labels(group=group).inc()
        raise
    limited = quota.limited(caller, model)
    return Gate(owner, group, caller if limited else None, turns)


def enqueue(gw: Gateway, gate: Gate, turn: TurnRequest, record: streams.StreamRecord | None) -> None:
    """Check and enqueue `turn` (with its stream record) in one round trip; raise the refusal."""
    settings = gw.settings
    now = time.time()
    checks: list[gated.Check] = []
    door_args = door.arguments(
        admission.registry(),
        gate.owner,
        settings.account_max_concurrent,
        settings.account_rpm,
        max_wait=settings.queue_max_wait_seconds,
        now=now,
        write=True,
        group=gate.group,
    )
    if door_args is not None:  # no account ready: the worker answers with the pool's own error
        checks.append(gated.Check("door", door.DOOR, [], door_args, "r[1] == 1"))
    read_quota: Callable[[Any], quota.Admission] | None = None
    if gate.caller is not None:
        keys, args, read_quota = quota.staged(gate.caller, turns=gate.turns)
        checks.append(gated.Check("quota", ratelimit.ADMIT, keys, args, "r[1] == 0"))
    cap = settings.key_max_conversations
    if gate.caller is not None and cap > 0 and not turn.continues:
        checks.append(gated.Check("room", ROOM, [owned_key(gate.owner)], [cap, repr(now)], "r[1] == 1"))
    ttl = settings.replay_ttl

    def fill(pipe: Any) -> None:
        also = (lambda p: streams.save(p, record, ttl=ttl)) if record is not None else None
        enqueue_turn_in(pipe, gw.queue, turn, settings, also=also)

    passed, replies = gated.run(gw.redis, checks, gated.captured(gw.redis, fill))
    if passed:
        if read_quota is not None:
            quota.keep(read_quota(replies[1 if door_args is not None else 0]))
        return
    _refuse(gate, settings, now, [c.name for c in checks], replies, read_quota)


def _refuse(
    gate: Gate,
    settings: Any,
    now: float,
    names: list[str],
    replies: list[Any],
    read_quota: Callable[[Any], quota.Admission] | None,
) -> None:
    """Raise what the check that stopped the turn raises on its own (its reply is the last)."""
    got = dict(zip(names, replies, strict=False))
    if "quota" in got and read_quota is not None:
        quota.keep(read_quota(got["quota"]))  # the headers; raises the key's 429 if it refused
    stopped = names[len(replies) - 1]
    if stopped == "door":
        raise door_admission.refusal(
            door.verdict(got["door"], now),
            now=now,
            max_wait=settings.queue_max_wait_seconds,
            rpm=settings.account_rpm,
            max_concurrent=settings.account_max_concurrent,
        )
    if stopped == "room":
        raise limits.over_limit(int(got["room"][1]), settings.key_max_conversations)
    raise RuntimeError(f"the {stopped} check stopped the turn without saying why")  # pragma: no cover
