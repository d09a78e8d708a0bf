"""The one turn pipeline every API surface feeds: admit → claim → resolve → subscribe+enqueue → watch.

A surface (Chat Completions, Responses, Anthropic Messages) parses its wire format into
a neutral `ChatRequest` and renders the relay's events back in its own shape; what
happens in between is the same for all of them and lives here:

    admission (429 when the account pool's line is too long) → Idempotency-Key
      (attach to an earlier run?) → resolve the conversation (new /
      continue / branch; lock) → subscribe to the relay (confirmed by Redis) →
      enqueue `workers.jobs.run_turn` → the surface's `respond(gw, run, chat)`

Subscribing before enqueueing means no event can be published before we listen. A
stream first holds up to STREAM_HOLD_SECONDS for the first event (`hold_first`) so
that a failure the worker reports at once (429 from the upstream, no worker at all)
still reaches the client as a real HTTP status instead of an error inside a 200 stream.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, g, request
from redis.exceptions import RedisError

from service import idempotency, locks
from service.errors import ApiError, InvalidRequest
from service.images import ImageLimits, park
from service.logs import bind_turn
from service.relay import TERMINAL, Subscription, last_event
from service.turns import TurnRequest, enqueue_turn, new_completion_id, request_cancel
from service.web import admin, quota
from service.web.errors import redis_unavailable
from service.web.extension import Gateway
from service.web.openai_format import Answer
from service.web.resolve import resolve
from service.web.stream import watch
from service.web.validation import Bounds, ChatRequest

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
ATTACH_POLL = 1.0  # fallback re-check of a claim while its first request resolves


@dataclasses.dataclass
class Run:
    """One completion as this request serves it: a turn it started, or one it attached to."""

    turn: TurnRequest
    sub: Subscription
    idempotency_key: str | None = None
    attached: bool = False
    # The key's admitted-turn ticket (settled in `close`), taken from the request that built the Run.
    ticket: quota.Ticket | None = dataclasses.field(default_factory=quota.take_ticket)
    answer: Answer | None = None  # what was sent, for the key's token usage (each surface sets it)

    def close(self, gw: Gateway, terminal: dict[str, Any] | None) -> None:
        """Unsubscribe; cancel what nobody will read; free the claim of a failed turn.

        `terminal` is the event that ended the response, or None if the client went
        away first. A turn with an Idempotency-Key is not cancelled when its client
        disappears: the SDK's retry will attach to it.
        """
        turn = self.turn
        try:
            finished = terminal is not None and not terminal.get("synthetic")
            free_claim = terminal is not None and terminal.get("type") == "error"
            if not finished and not self.attached:
                if gw.queue.remove(turn.completion_id):
                    # Never started, and now never will: free what the turn held.
                    free_claim = True
                    if turn.lock_token:
                        locks.release(gw.redis, turn.conversation_id, turn.lock_token)
                elif self.idempotency_key is None or terminal is not None:
                    log.info("event=completion_abandoned completion_id=%s", turn.completion_id)
                    request_cancel(gw.redis, turn.completion_id)
                if turn.lock_token and (terminal or {}).get("error", {}).get("code") == "worker_lost":
                    # Its worker died holding the conversation's lock: free it now, not in 2× the lease.
                    locks.release(gw.redis, turn.conversation_id, turn.lock_token)
            if self.idempotency_key and free_claim:
                idempotency.release(gw.redis, turn.owner, self.idempotency_key, turn.completion_id)
        except RedisError as exc:  # Redis is down: the lock, claim and job expire by themselves
            log.warning("event=cleanup_failed completion_id=%s error=%r", turn.completion_id, exc)
        except Exception:
            log.warning("event=cleanup_failed completion_id=%s", turn.completion_id, exc_info=True)
        finally:
            self.sub.close()
            if self.ticket is not None:
                self.ticket.settle(gw.redis, terminal, None if self.attached else self.answer)


Respond = Callable[[Gateway, Run, ChatRequest], Response]


def submit(
    gw: Gateway,
    raw: bytes,
    chat: ChatRequest,
    respond: Respond,
    *,
    completion_id: str | None = None,
    store: bool = True,
) -> Response:
    """Run `chat` as a turn (or attach to the run its Idempotency-Key names); `respond` renders it.

    `raw` is the body as `service.web.body.read_body` read it (its digest ties an
    Idempotency-Key to one request). `completion_id` lets a surface pick its own id
    prefix (`resp_`, `msg_`); `store` False asks the worker to keep nothing once the
    turn is over.
    """
    g.model = chat.model  # labels this request's metrics (service.web.telemetry)
    admin.admit()  # 429 at once if the account pool's line is too long
    quota.admit(gw, chat.model)  # the key's model access and limits: 403/429, or a ticket for the Run
    key = _idempotency_key()
    completion_id, created = completion_id or new_completion_id(), int(time.time())
    mine = idempotency.Claim(completion_id, idempotency.body_digest(raw), created=created)
    if key is not None:
        attached = _claim_or_attach(gw, key, mine, chat, respond)
        if attached is not None:
            return attached
    try:
        run = _begin(gw, chat, key, mine, store=store)
    except BaseException:
        if key is not None:  # nothing will fulfil the claim: a retry must run afresh at once
            _release_claim(gw, key, completion_id)
        raise
    return respond(gw, run, chat)


def bounds(gw: Gateway) -> Bounds:
    """The request size limits of this gateway's settings, for every surface's parser."""
    settings = gw.settings
    limits = ImageLimits(settings.image_max_bytes, settings.image_max_per_message, settings.image_url_fetch)
    return Bounds(settings.max_messages, settings.max_input_chars, limits)


def _release_claim(gw: Gateway, key: str, completion_id: str) -> None:
    try:
        idempotency.release(gw.redis, g.owner, key, completion_id)
    except Exception:  # Redis is down: the claim expires with REPLAY_TTL
        log.warning("event=claim_release_failed completion_id=%s", completion_id, exc_info=True)


def _begin(gw: Gateway, chat: ChatRequest, key: str | None, mine: idempotency.Claim, *, store: bool) -> Run:
    """Resolve the conversation and start the turn (the claim, if any, is taken)."""
    completion_id, created = mine.completion_id, mine.created
    refs = park(gw.redis, chat.images)  # before the lock: nothing to free if Redis fails here
    resolution = resolve(gw, chat, g.owner)
    turn = TurnRequest(
        completion_id=completion_id,
        conversation_id=resolution.conversation_id,
        owner=g.owner,
        model=chat.model,
        prompt=chat.prompt,
        history=resolution.history,
        system=resolution.system,
        continues=resolution.continues,
        created=created,
        lock_token=resolution.lock_token,
        request_id=g.request_id,
        store=store,
        images=[ref.to_json() for ref in refs],
        options=chat.options,
    )
    if key is not None:
        idempotency.record(
            gw.redis, g.owner, key, dataclasses.replace(mine, conversation_id=turn.conversation_id)
        )
    g.conversation_id = turn.conversation_id
    g.conversation_new = resolution.how in ("new", "branched")  # nothing kept if this turn fails
    bind_turn(job_id=turn.completion_id, conversation_id=turn.conversation_id)  # on every log line
    if resolution.turns_remaining is not None:
        g.turns_remaining = resolution.turns_remaining
    run = Run(turn, _start(gw, turn), idempotency_key=key)
    log.info(
        "event=completion_enqueued completion_id=%s conversation_id=%s model=%s stream=%s how=%s",
        turn.completion_id,
        turn.conversation_id,
        turn.model,
        chat.stream,
        resolution.how,
    )
    return run


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters.", param="Idempotency-Key")
    return key


def _claim_or_attach(
    gw: Gateway, key: str, mine: idempotency.Claim, chat: ChatRequest, respond: Respond
) -> Response | None:
    """Claim the Idempotency-Key for this request, or serve it from the run that has it."""
    earlier = idempotency.claim(gw.redis, g.owner, key, mine, ttl=gw.settings.replay_ttl)
    if earlier is None:
        return None
    if earlier.body != mine.body:
        raise InvalidRequest(
            "Keys for idempotent requests can only be used with the same parameters "
            "they were first used with.",
            param=None,
            code="idempotency_key_reused",
        )
    attached = _attach(gw, earlier, chat, key, respond)
    if attached is None:  # that run failed: this request runs afresh under the key
        idempotency.claim(gw.redis, g.owner, key, mine, ttl=gw.settings.replay_ttl)
    return attached


def _attach(
    gw: Gateway, earlier: idempotency.Claim, chat: ChatRequest, key: str, respond: Respond
) -> Response | None:
    """Serve a retry from the earlier run of the same request; None if that run failed."""
    if not earlier.conversation_id:  # the first request is still resolving (e.g. queued on a lock)
        deadline = time.monotonic() + gw.settings.job_timeout + gw.settings.queue_wait_timeout
        with gw.hub.notifications(idempotency.claim_channel(g.owner, key)) as changed:
            while not earlier.conversation_id:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                changed.clear()
                refreshed = idempotency.lookup(gw.redis, g.owner, key)
                if refreshed is None or refreshed.completion_id != earlier.completion_id:
                    return None  # released (that run failed): run afresh
                earlier = refreshed
                if not earlier.conversation_id:  # woken by `record`/`release`, else a slow re-check
                    changed.wait(min(ATTACH_POLL, remaining))
    last = last_event(gw.redis, earlier.completion_id)
    if last is not None and last.get("type") == "error":
        idempotency.release(gw.redis, g.owner, key, earlier.completion_id)
        return None
    turn = TurnRequest(
        completion_id=earlier.completion_id,
        conversation_id=earlier.conversation_id,
        owner=g.owner,
        model=chat.model,
        prompt=chat.prompt,
        created=earlier.created,
    )
    g.conversation_id = turn.conversation_id
    sub = _subscribe(gw, turn.completion_id)
    sub.catch_up()
    log.info("event=completion_attached completion_id=%s", turn.completion_id)
    return respond(gw, Run(turn, sub, idempotency_key=key, attached=True), chat)


def _subscribe(gw: Gateway, completion_id: str) -> Subscription:
    """Subscribe to a completion's relay channel; 503 if Redis does not confirm."""
    try:
        return gw.hub.subscribe(completion_id)
    except TimeoutError as exc:
        raise redis_unavailable() from exc


def _start(gw: Gateway, turn: TurnRequest) -> Subscription:
    """Subscribe to the turn's relay channel, then enqueue it; on failure free its lock."""
    try:
        sub = _subscribe(gw, turn.completion_id)
        try:
            enqueue_turn(gw.queue, turn, gw.settings)
        except BaseException:
            sub.close()
            raise
    except BaseException:
        if turn.lock_token:
            locks.release(gw.redis, turn.conversation_id, turn.lock_token)
        raise
    return sub


def collect(gw: Gateway, run: Run, answer: Answer) -> dict[str, Any]:
    """Wait for the whole answer into `answer`; the `done` event, or raise the turn's error."""
    turn = run.turn
    terminal: dict[str, Any] | None = None
    try:
        for event in watch(run.sub, gw.redis, turn.completion_id, gw.settings):
            if event is None:
                continue
            if event["type"] in TERMINAL:
                terminal = event
            elif event["type"] == "limits":
                g.turns_remaining = max(0, int(event["max"]) - int(event["used"]))
            answer.add(event)
    finally:
        run.close(gw, terminal)
    if terminal is None or terminal["type"] == "error":  # watch only ends on a terminal event
        raise ApiError.from_event((terminal or {}).get("error") or {})
    return terminal


def hold_first(gw: Gateway, run: Run) -> tuple[Iterator[dict[str, Any] | None], dict[str, Any] | None]:
    """The turn's events and the first one, held for briefly before a stream commits to a 200.

    An error that arrives within the hold is raised, so the client gets a real status.
    """
    turn = run.turn
    hold = gw.settings.stream_hold_seconds
    events: Iterator[dict[str, Any] | None] = watch(
        run.sub, gw.redis, turn.completion_id, gw.settings, hold=hold if hold > 0 else None
    )
    first: dict[str, Any] | None = None
    if hold > 0:
        try:
            first = next(events)
        except BaseException:
            run.close(gw, None)
            raise
        if first is not None and first["type"] == "error":
            run.close(gw, first)
            raise ApiError.from_event(first.get("error") or {})
    return events, first
