"""The web tier's one Redis round trip before the queue: the door, the key's quota, the room for a
new conversation and RQ's enqueue, in one script (`service.state.gated`).

Each check used to be its own round trip before the enqueue (door → quota → enqueue: three
on the path to the first token). Now `prepare` does what needs no Redis while the request
is read (the 403 for a model the key may not use, the 503 for an empty account group, both
from memory), and `enqueue` runs the checks and the enqueue together once the turn is
built; a refusal is the same 429 each check raised on its own, in the same order (door,
then quota, then room), with what the checks wrote kept as before (the door's claim, the
key's ticket: the request's teardown settles it).

An Idempotency-Key's claim and a continued conversation's read and lock are two more
checks of the same script (`pipeline.gate_continue`), after the door and the quota, and
a request's image bytes are parked by its commands. Only a pointer that leads nowhere and
a history no conversation has (which may consume a `store: false` digest) go the old way:
checked and counted first, as a turn always was (`submit`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NoReturn

from flask import g

from service.access import ratelimit
from service.access.ratelimit import Caller
from service.accounts import admission as door_admission
from service.accounts import door
from service.errors import UpstreamUnavailable
from service.images import ImageInput, ImageRef, park_in
from service.runtime import metrics
from service.state import gated, idempotency, streams
from service.state.conversations import owned_key
from service.state.relay import channel_name
from service.turns import TurnRequest, enqueue_turn_in
from service.web.http.extension import Gateway
from service.web.pipeline import admission, quota
from service.web.pipeline import conversation_limits as limits
from service.web.pipeline.gate_continue import CLAIM, CONTINUE, NEW, Target, Unresolved
from service.web.pipeline.resolve import turns_left

LISTENING = "return redis.call('PUBSUB', 'NUMSUB', ARGV[1])[2]"
"""How many subscribe to the turn's relay channel as its job is queued: ours, if Redis handled our
SUBSCRIBE (sent first, unconfirmed) before this script. Then every event the worker publishes
reaches us live and the replay log needs no read (`pipeline.enqueue.start`)."""

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
    target: Target = NEW  # the conversation to continue (`gate_continue.aim`)
    claim: tuple[str, idempotency.Claim] | None = None  # the Idempotency-Key's claim key and ours
    parked: tuple[gated.Command, ...] = ()  # the request's image bytes, written only if the turn goes


def park(gw: Gateway, gate: Gate, images: tuple[ImageInput, ...]) -> tuple[list[ImageRef], Gate]:
    """The refs the job carries; the bytes are parked by the gate's script, only once its checks
    passed (a refused turn parks nothing, as when `service.images.park` ran after the door)."""
    refs: list[ImageRef] = []
    if not images:
        return refs, gate
    commands = gated.captured(gw.redis, lambda pipe: refs.extend(park_in(pipe, images)))
    return refs, dataclasses.replace(gate, parked=tuple(commands))


class ClaimTaken(Exception):
    """The Idempotency-Key was claimed already: the request attaches to that run (`pipeline.attach`)."""

    def __init__(self, earlier: idempotency.Claim) -> None:
        super().__init__("claimed")
        self.earlier = earlier


def prepare(
    gw: Gateway,
    owner: str,
    group: str,
    caller: Caller | None,
    model: str,
    turns: int,
    target: Target = NEW,
) -> Gate:
    """The checks that need no Redis, now (403 model, 503 empty group); the rest waits for `enqueue`."""
    try:
        door_admission.check_group(admission.registry(), group)
    except UpstreamUnavailable:
        metrics.GROUP_UNAVAILABLE.labels(group=group).inc()
        raise
    limited = quota.limited(caller, model)
    return Gate(owner, group, caller if limited else None, turns, target)


def enqueue(gw: Gateway, gate: Gate, turn: TurnRequest, record: streams.StreamRecord | None) -> bool:
    """Check and enqueue `turn` (with its stream record) in one round trip; raise the refusal.

    True if the turn's relay channel was already subscribed when its job was queued (`LISTENING`).
    """
    settings = gw.settings
    now = time.time()
    checks = [gated.Check("listening", LISTENING, [], [channel_name(turn.completion_id)], "true")]
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
    if gate.claim is not None:
        checks.append(gated.Check("claim", CLAIM, [gate.claim[0]], [], "r[1] == 1"))
    if gate.target.conversation_id:
        ttl_ms = int((settings.queue_wait_timeout + 10) * 1000)  # as `resolve` takes it
        keys = gate.target.keys(gate.owner)
        args = [gate.owner, turn.lock_token, ttl_ms]
        checks.append(gated.Check("continue", CONTINUE, keys, args, "r[1] == 1"))
    cap = settings.key_max_conversations
    if gate.caller is not None and cap > 0 and not turn.continues:
        checks.append(gated.Check("room", ROOM, [owned_key(gate.owner)], [cap, repr(now)], "r[1] == 1"))
    ttl = settings.replay_ttl

    def fill(pipe: Any) -> None:
        also = (lambda p: streams.save(p, record, ttl=ttl)) if record is not None else None
        enqueue_turn_in(pipe, gw.queue, turn, settings, also=also)
        if gate.claim is not None:  # claimed with its conversation known: no `record` to follow
            pipe.set(gate.claim[0], gate.claim[1].to_json(), nx=True, ex=ttl)

    commands = [*gate.parked, *gated.captured(gw.redis, fill)]
    passed, replies = gated.run(gw.redis, checks, commands)
    if passed:
        got = dict(zip([c.name for c in checks], replies, strict=True))
        if read_quota is not None:
            quota.keep(read_quota(got["quota"]))
        if "continue" in got:  # the continued conversation's handle says how many turns are left
            left = turns_left(got["continue"][1])
            if left is not None:
                g.turns_remaining = left
        return int(got["listening"]) > 0
    _refuse(gate, settings, now, [c.name for c in checks], replies, read_quota)


def _refuse(
    gate: Gate,
    settings: Any,
    now: float,
    names: list[str],
    replies: list[Any],
    read_quota: Callable[[Any], quota.Admission] | None,
) -> NoReturn:
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
    if stopped == "claim":
        raise ClaimTaken(idempotency.Claim.from_json(got["claim"][1]))
    if stopped == "continue":
        raise Unresolved(got["continue"][1])
    if stopped == "room":
        raise limits.over_limit(int(got["room"][1]), settings.key_max_conversations)
    raise RuntimeError(f"the {stopped} check stopped the turn without saying why")  # pragma: no cover
