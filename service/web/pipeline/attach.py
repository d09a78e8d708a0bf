"""Idempotency-Key in the pipeline: claim the key for this request, or rejoin the run that has it.

`submit` asks `claim_or_attach` before starting a turn. The first request with a key
claims it; a retry with the same key and body gets the earlier run back (waiting, if
that request is still resolving its conversation, for its `record` or `release`), and
`submit` answers from it as from a fresh run, so an SDK's retry reaches the upstream
once. A different body under the same key is a 400 `idempotency_key_reused`; a run
that failed gives the key back and the retry runs afresh.
"""

from __future__ import annotations

import logging
import time

from flask import g, request

from service.errors import InvalidRequest
from service.events import Failed
from service.state import idempotency, streams
from service.state.relay import last_event
from service.turns import TurnRequest
from service.web.http.extension import Gateway
from service.web.pipeline import quota, resume
from service.web.pipeline.enqueue import subscribe
from service.web.pipeline.request import ChatRequest
from service.web.pipeline.run import Run

log = logging.getLogger(__name__)

ATTACH_POLL = 1.0  # fallback re-check of a claim while its first request resolves


def release_claim(gw: Gateway, owner: str, key: str, completion_id: str) -> None:
    """Give the key back so a retry runs afresh at once (nothing will fulfil the claim)."""
    try:
        idempotency.release(gw.redis, owner, key, completion_id)
    except Exception:  # Redis is down: the claim expires with REPLAY_TTL
        log.warning("event=claim_release_failed completion_id=%s", completion_id, exc_info=True)


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters.", param="Idempotency-Key")
    return key


def claim_or_attach(
    gw: Gateway,
    owner: str,
    key: str,
    mine: idempotency.Claim,
    chat: ChatRequest,
) -> Run | None:
    """Claim the Idempotency-Key for this request, or the run that already has it (to answer from)."""
    earlier = idempotency.claim(gw.redis, owner, key, mine, ttl=gw.settings.replay_ttl)
    if earlier is None:
        return None
    return attach_to(gw, owner, key, earlier, mine, chat)


def attach_to(
    gw: Gateway,
    owner: str,
    key: str,
    earlier: idempotency.Claim,
    mine: idempotency.Claim,
    chat: ChatRequest,
) -> Run | None:
    """The run `earlier` claimed the key for (found claimed by `claim_or_attach` or `pipeline.gate`);
    None when that run failed and the key is claimed for `mine` now."""
    if earlier.body != mine.body:
        raise InvalidRequest(
            "Keys for idempotent requests can only be used with the same parameters "
            "they were first used with.",
            param=None,
            code="idempotency_key_reused",
        )
    attached = _attach(gw, owner, earlier, chat, key)
    if attached is None:  # that run failed: this request runs afresh under the key
        idempotency.claim(gw.redis, owner, key, mine, ttl=gw.settings.replay_ttl)
    return attached


def _attach(
    gw: Gateway,
    owner: str,
    earlier: idempotency.Claim,
    chat: ChatRequest,
    key: str,
) -> Run | None:
    """The earlier run of the same request, rejoined, for a retry to answer from; None if it failed."""
    if not earlier.conversation_id:  # the first request is still resolving (e.g. queued on a lock)
        deadline = time.monotonic() + gw.settings.job_timeout + gw.settings.queue_wait_timeout
        with gw.hub.notifications(idempotency.claim_channel(owner, key)) as changed:
            while not earlier.conversation_id:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                changed.clear()
                refreshed = idempotency.lookup(gw.redis, owner, key)
                if refreshed is None or refreshed.completion_id != earlier.completion_id:
                    return None  # released (that run failed): run afresh
                earlier = refreshed
                if not earlier.conversation_id:  # woken by `record`/`release`, else a slow re-check
                    changed.wait(min(ATTACH_POLL, remaining))
    last = last_event(gw.redis, earlier.completion_id)
    if last is not None and last.get("type") == Failed.TYPE:
        idempotency.release(gw.redis, owner, key, earlier.completion_id)
        return None
    turn = TurnRequest(
        completion_id=earlier.completion_id,
        conversation_id=earlier.conversation_id,
        owner=owner,
        model=chat.model,
        prompt=chat.prompt,
        created=earlier.created,
    )
    g.conversation_id = turn.conversation_id
    record = streams.load(gw.redis, turn.completion_id, owner)
    streams.end_grace(gw.redis, turn.completion_id)  # a client is back: its turn must not be cancelled
    sub = subscribe(gw, turn.completion_id)
    sub.catch_up()
    log.info("event=completion_attached completion_id=%s", turn.completion_id)
    run = Run(
        turn,
        sub,
        idempotency_key=key,
        attached=True,
        ticket=quota.take_ticket(),
        # A surface that made the run resumable left its record: the retry survives a drop too.
        grace=resume.grace_for(gw, key=key, store=True) if record is not None else 0.0,
        detached=record is not None and record.background,
    )
    return run
