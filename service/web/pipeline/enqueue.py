"""Starting a turn: subscribe to its relay channel (confirmed by Redis), then enqueue it.

Subscribing before enqueueing means no event can be published before we listen. A
resumable stream's record (`service.state.streams`) goes out with the job, in the same
Redis round trip.
"""

from __future__ import annotations

from service.state import locks, streams
from service.state.relay import Subscription
from service.turns import TurnRequest, enqueue_turn
from service.web.http.errors import redis_unavailable
from service.web.http.extension import Gateway


def subscribe(gw: Gateway, completion_id: str) -> Subscription:
    """Subscribe to a completion's relay channel; 503 if Redis does not confirm."""
    try:
        return gw.hub.subscribe(completion_id)
    except TimeoutError as exc:
        raise redis_unavailable() from exc


def start(gw: Gateway, turn: TurnRequest, record: streams.StreamRecord | None = None) -> Subscription:
    """Subscribe to the turn's relay channel, then enqueue it (with its stream record, in the
    same round trip); on failure free its lock."""
    ttl = gw.settings.replay_ttl
    also = (lambda pipe: streams.save(pipe, record, ttl=ttl)) if record is not None else None
    try:
        sub = subscribe(gw, turn.completion_id)
        try:
            enqueue_turn(gw.queue, turn, gw.settings, also=also)
        except BaseException:
            sub.close()
            raise
    except BaseException:
        if turn.lock_token:
            locks.release(gw.redis, turn.conversation_id, turn.lock_token)
        raise
    return sub
