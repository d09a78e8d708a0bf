"""The one turn pipeline every API surface feeds: admit → claim → resolve → subscribe+enqueue → watch.

A surface (Chat Completions, Responses, Anthropic Messages) parses its wire format into
a neutral `ChatRequest` and renders the relay's events back in its own shape; what
happens in between is the same for all of them and lives here:

    admission (429 when the account pool's line is too long) → Idempotency-Key
      (attach to an earlier run?) → resolve the conversation (new /
      continue / branch; lock) → subscribe to the relay (confirmed by Redis) →
      enqueue `workers.jobs.run_turn` (`enqueue`) → `respond.answer_turn` through the
      surface's renderer

Subscribing before enqueueing means no event can be published before we listen. A
surface that makes its streams resumable (`resume.Resumable`) or answers in the
background (`answer=`) says so here; the rest is the same for every surface.
A surface calls `submit` once with its parsed request and a renderer factory and gets
the Flask response back; it never waits, holds or closes anything itself.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TypedDict

from flask import Response, g, request

from service.errors import InvalidRequest
from service.events import Failed
from service.images import ImageLimits, park
from service.models import Aliases
from service.runtime import trace
from service.runtime.logs import bind_turn
from service.state import idempotency, streams
from service.state.relay import last_event
from service.turns import TurnRequest, new_completion_id
from service.web.http.extension import Gateway
from service.web.pipeline import admission, quota, resume
from service.web.pipeline import conversation_limits as limits
from service.web.pipeline.enqueue import start, subscribe
from service.web.pipeline.request import Bounds, ChatRequest
from service.web.pipeline.resolve import resolve
from service.web.pipeline.respond import MakeRenderer, answer_turn
from service.web.pipeline.run import Run

log = logging.getLogger(__name__)

ATTACH_POLL = 1.0  # fallback re-check of a claim while its first request resolves

Answerer = Callable[[Gateway, Run, ChatRequest, MakeRenderer], Response]
"""How the running turn is answered: `respond.answer_turn`, or a background response's answer."""


def submit(
    gw: Gateway,
    raw: bytes,
    chat: ChatRequest,
    make: MakeRenderer,
    *,
    completion_id: str | None = None,
    store: bool = True,
    resumable: resume.Resumable | None = None,
    answer: Answerer = answer_turn,
) -> Response:
    """Run `chat` as a turn (or attach to the run its Idempotency-Key names); `make` builds its renderer.

    `raw` is the body as `service.web.http.body.read_body` read it (its digest ties an
    Idempotency-Key to one request). `completion_id` lets a surface pick its own id
    prefix (`resp_`, `msg_`); `store` False asks the worker to keep nothing once the
    turn is over. `resumable` makes the stream survive a disconnect (`pipeline.resume`);
    `answer` answers the running turn (a background response returns at once).
    """
    owner: str = g.owner  # the request's caller, read once here: helpers take it as an argument
    g.model = chat.model  # labels this request's metrics (service.web.http.telemetry)
    group = admission.caller_group()  # the key's account group: its turns run on no other accounts
    admission.admit(owner, group)  # 429 at once if the group's line is too long; 503 if it is empty
    trace.mark("admission")
    # The key's model access and limits (403/429), with its conversation count in the same round trip.
    _keep(quota.admit(gw, g.get("caller"), chat.model, owner=owner))
    trace.mark("quota")
    key = _idempotency_key()
    completion_id, created = completion_id or new_completion_id(), int(time.time())
    mine = idempotency.Claim(completion_id, idempotency.body_digest(raw), created=created)
    if key is not None:
        attached = _claim_or_attach(gw, owner, key, mine, chat, make, answer)
        if attached is not None:
            return attached
        trace.mark("claim")
    try:
        run = _begin(gw, owner, chat, key, mine, store=store, group=group, resumable=resumable)
    except BaseException:
        if key is not None:  # nothing will fulfil the claim: a retry must run afresh at once
            _release_claim(gw, owner, key, completion_id)
        raise
    return _answer(gw, run, chat, make, answer)


def _keep(admitted: quota.Admission | None) -> None:
    """Keep the key's admission on the request: its headers, and the ticket a `Run` will take.

    `quota`'s after-request hook reads `g.rate`; its teardown settles a ticket no `Run` took.
    """
    if admitted is None:
        return
    g.rate = admitted.decision
    if admitted.owned is not None:
        g.owned_count = admitted.owned  # for `conversation_limits.check_room`
    if admitted.error is not None:
        raise admitted.error
    g.ticket = admitted.ticket


def _take_ticket() -> quota.Ticket | None:
    """Hand this request's ticket to the `Run` that will settle it when the response ends."""
    ticket: quota.Ticket | None = g.get("ticket")
    g.ticket = None
    return ticket


def _answer(
    gw: Gateway, run: Run, chat: ChatRequest, make: MakeRenderer, answer: Answerer = answer_turn
) -> Response:
    """`answer` (`answer_turn`), then the turns left that a collected answer's limits event reported."""
    try:
        return answer(gw, run, chat, make)
    finally:
        if run.turns_remaining is not None:
            g.turns_remaining = run.turns_remaining


def bounds(gw: Gateway) -> Bounds:
    """The request size limits of this gateway's settings, for every surface's parser."""
    settings = gw.settings
    limits = ImageLimits(settings.image_max_bytes, settings.image_max_per_message, settings.image_url_fetch)
    return Bounds(settings.max_messages, settings.max_input_chars, limits)


class ParseOptions(TypedDict):
    """What every surface's parser takes from the settings (`parse(raw, headers, **options)`)."""

    upstream: str
    bounds: Bounds
    aliases: Aliases
    tool_emulation: bool


def parse_options(gw: Gateway) -> ParseOptions:
    """The settings a surface's parser needs: upstream dialect, bounds, model aliases, tools."""
    settings = gw.settings
    return ParseOptions(
        upstream=settings.upstream,
        bounds=bounds(gw),
        aliases=settings.model_aliases,
        tool_emulation=settings.tool_emulation,
    )


def _release_claim(gw: Gateway, owner: str, key: str, completion_id: str) -> None:
    try:
        idempotency.release(gw.redis, owner, key, completion_id)
    except Exception:  # Redis is down: the claim expires with REPLAY_TTL
        log.warning("event=claim_release_failed completion_id=%s", completion_id, exc_info=True)


def _begin(
    gw: Gateway,
    owner: str,
    chat: ChatRequest,
    key: str | None,
    mine: idempotency.Claim,
    *,
    store: bool,
    group: str,
    resumable: resume.Resumable | None,
) -> Run:
    """Resolve the conversation and start the turn (the claim, if any, is taken)."""
    completion_id, created = mine.completion_id, mine.created
    refs = park(gw.redis, chat.images)  # before the lock: nothing to free if Redis fails here
    trace.mark("park")
    resolution = resolve(gw, chat, owner)
    trace.mark("resolve")
    if not resolution.continues:  # a new conversation (nothing locked): within KEY_MAX_CONVERSATIONS?
        limits.check_room(gw, owner)
        trace.mark("room")
    turn = TurnRequest(
        completion_id=completion_id,
        conversation_id=resolution.conversation_id,
        owner=owner,
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
        kind=chat.kind,
        image_format=chat.image_format,
        instructions=resolution.instructions,
        carried=resolution.carried.to_json() if resolution.carried else {},
        group=group,
        trace=trace.current() is not None,
    )
    if key is not None:
        idempotency.record(
            gw.redis, owner, key, dataclasses.replace(mine, conversation_id=turn.conversation_id)
        )
        trace.mark("record")
    g.conversation_id = turn.conversation_id
    g.conversation_new = resolution.how in ("new", "branched")  # nothing kept if this turn fails
    bind_turn(job_id=turn.completion_id, conversation_id=turn.conversation_id)  # on every log line
    if resolution.turns_remaining is not None:
        g.turns_remaining = resolution.turns_remaining
    grace, record = resume.remember(gw, turn, chat, key, resumable)
    run = Run(
        turn,
        start(gw, turn, record),
        idempotency_key=key,
        ticket=_take_ticket(),
        grace=grace,
        detached=resumable is not None and resumable.background,
    )
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
    gw: Gateway,
    owner: str,
    key: str,
    mine: idempotency.Claim,
    chat: ChatRequest,
    make: MakeRenderer,
    answer: Answerer,
) -> Response | None:
    """Claim the Idempotency-Key for this request, or serve it from the run that has it."""
    earlier = idempotency.claim(gw.redis, owner, key, mine, ttl=gw.settings.replay_ttl)
    if earlier is None:
        return None
    if earlier.body != mine.body:
        raise InvalidRequest(
            "Keys for idempotent requests can only be used with the same parameters "
            "they were first used with.",
            param=None,
            code="idempotency_key_reused",
        )
    attached = _attach(gw, owner, earlier, chat, key, make, answer)
    if attached is None:  # that run failed: this request runs afresh under the key
        idempotency.claim(gw.redis, owner, key, mine, ttl=gw.settings.replay_ttl)
    return attached


def _attach(
    gw: Gateway,
    owner: str,
    earlier: idempotency.Claim,
    chat: ChatRequest,
    key: str,
    make: MakeRenderer,
    answer: Answerer,
) -> Response | None:
    """Serve a retry from the earlier run of the same request; None if that run failed."""
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
        ticket=_take_ticket(),
        # A surface that made the run resumable left its record: the retry survives a drop too.
        grace=resume.grace_for(gw, key=key, store=True) if record is not None else 0.0,
        detached=record is not None and record.background,
    )
    return _answer(gw, run, chat, make, answer)
