"""Starting a turn: subscribe to its relay channel, enqueue it, then await Redis's confirmation.

Subscribing before enqueueing means no event can be published before we listen. A
resumable stream's record (`service.state.streams`) goes out with the job, in the same
Redis round trip.
"""

from __future__ import annotations

import logging

from service.runtime import trace
from service.state import locks, streams
from service.state.relay_subscription import Subscription
from service.turns import TurnRequest, enqueue_turn, request_cancel
from service.web.http.errors import redis_unavailable
from service.web.http.extension import Gateway
from service.web.pipeline.gate import ClaimTaken, Gate
from service.web.pipeline.gate import enqueue as gated_enqueue
from service.web.pipeline.gate_continue import Unresolved

log = logging.getLogger(__name__)


def subscribe(gw: Gateway, completion_id: str) -> Subscription:
    """Subscribe to a completion's relay channel; 503 if Redis does not confirm."""
    try:
        return gw.hub.subscribe(completion_id)
    except TimeoutError as exc:
        raise redis_unavailable() from exc


def start(
    gw: Gateway, turn: TurnRequest, record: streams.StreamRecord | None = None, gate: Gate | None = None
) -> Subscription:
    """Subscribe to the turn's relay channel, enqueue it (with its stream record, in the same
    round trip), and confirm; on failure (a refusal too) free its lock.

    With `gate`, the door, the key's quota and the room are checked in the enqueue's own
    round trip (`pipeline.gate`), which raises their 429s. The SUBSCRIBE is sent first and
    its confirmation awaited after the enqueue, so the two round trips overlap; an event the
    worker published before the confirmation is read from the replay log (`catch_up`, while
    the worker is still on its way to the upstream) — unless the gate's script saw our
    subscription already in place when it queued the job: then nothing can have been missed,
    and the web side's one round trip is the script.
    """
    ttl = gw.settings.replay_ttl
    also = (lambda pipe: streams.save(pipe, record, ttl=ttl)) if record is not None else None
    try:
        with trace.overlapped():
            sub = gw.hub.subscribe(turn.completion_id, confirmed=False)
        listening = False
        try:
            if gate is not None:
                listening = gated_enqueue(gw, gate, turn, record)
            else:
                enqueue_turn(gw.queue, turn, gw.settings, also=also)
            trace.mark("enqueue")
        except BaseException:
            sub.close()
            raise
    except (ClaimTaken, Unresolved):  # the gate's script stopped before the lock was ours
        raise
    except BaseException:
        if turn.lock_token:
            locks.release(gw.redis, turn.conversation_id, turn.lock_token)
        raise
    try:
        gw.hub.confirm(sub)
    except TimeoutError as exc:
        _withdraw(gw, turn)
        raise redis_unavailable() from exc
    if not listening:
        sub.catch_up()
    trace.mark("subscribed")
    return sub


def _withdraw(gw: Gateway, turn: TurnRequest) -> None:
    """An enqueued turn nobody can listen to: take it off the queue, else ask it to stop."""
    try:
        if gw.queue.remove(turn.completion_id):
            if turn.lock_token:
                locks.release(gw.redis, turn.conversation_id, turn.lock_token)
        else:
            request_cancel(gw.redis, turn.completion_id)
    except Exception:  # Redis is failing too: the job's TTL and the lock's lease end it
        log.warning("event=withdraw_failed completion_id=%s", turn.completion_id, exc_info=True)
