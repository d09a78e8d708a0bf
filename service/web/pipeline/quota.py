"""Per-key limits in the web tier: admit a turn, put the limits on the response, settle at the end.

Every response to a request by a key with limits carries OpenAI's `x-ratelimit-*`
headers (a turn's from its admission, other endpoints' from a read-only look). The
pipeline calls `admit(gw, caller, model)` once the request is parsed (so the model is
known) and keeps the `Admission` on the request (`g.rate`, `g.ticket`: this module's hooks
read them). An admitted turn holds a *ticket*: its key and its turn-slot lease. The `Run`
serving the response takes the ticket and settles it in `Run.close` —
when the last byte of a stream is sent or the client goes away, which is after this
request's context is gone, hence the ticket carries the caller. A request that fails
before a `Run` takes its ticket settles it as an error in teardown, so no path leaks a
slot. The slot's lease is short and renewed while the ticket is held
(`service.web.pipeline.slot_leases`), so a dead process's slots free themselves within about two
KEY_SLOT_LEASE_SECONDS.

A model the key may not use is a 403 `model_not_found`, as OpenAI answers a project
without access to a model (a 404 would claim the model does not exist).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g
from redis import Redis
from redis.exceptions import RedisError

from service.access import ratelimit
from service.access.key_limits import Limits
from service.access.ratelimit import Caller
from service.errors import ApiError
from service.events import Failed, Terminal
from service.runtime import metrics
from service.runtime.settings import Settings
from service.state.conversations import count_owned_in
from service.tokens import count_messages, count_text
from service.web.http.extension import Gateway, gateway
from service.web.pipeline import slot_leases

log = logging.getLogger(__name__)

LIMIT_NAMES = {
    ratelimit.QUOTA: "tokens_per_day",
    ratelimit.RPM: "rpm",
    ratelimit.CONCURRENT: "max_concurrent",
}


def defaults(settings: Settings) -> Limits:
    """The KEY_DEFAULT_* limits: for static keys, and managed keys' unset limits."""
    return Limits(
        rpm=settings.key_default_rpm,
        max_concurrent=settings.key_default_concurrent,
        tokens_per_day=settings.key_default_tokens_per_day,
        models=settings.key_default_models or None,
    )


@dataclasses.dataclass
class Ticket:
    """An admitted turn's claim on its key's limits, settled exactly once."""

    caller: Caller
    lease: str
    settled: bool = False
    renewer: slot_leases.SlotLeases | None = None  # renews the slot's lease until it is settled

    def settle(self, redis: Redis, terminal: Terminal | None, answer: Any | None) -> None:
        """Free the turn slot; record tokens and errors. Never raises.

        A failed turn is charged the input tokens only when it reached the upstream (its
        `Failed` event counts `upstream_turns`), and no output tokens.

        `answer` is the `Answer` the response was built from (None: count no tokens, e.g. a
        retry attached to a turn already counted); `terminal` None means the client left.
        """
        if self.settled:
            return
        self.settled = True
        if self.renewer is not None:
            self.renewer.drop(self.lease)
        failed = isinstance(terminal, Failed)
        # A failed turn that reached the upstream still sent the request's text there.
        sent = not failed or (isinstance(terminal, Failed) and terminal.upstream_turns > 0)
        input_tokens = output_tokens = 0
        try:
            if answer is not None and sent:
                input_tokens = count_messages(answer.messages)
            if answer is not None and not failed:
                output_tokens = count_text(answer.content)
            ratelimit.settle(
                redis,
                self.caller,
                self.lease,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                error=failed,
            )
        except RedisError as exc:  # the slot's lease expires by itself
            log.warning("event=usage_not_recorded key_id=%s error=%r", self.caller.id, exc)
        except Exception:
            log.warning("event=usage_not_recorded key_id=%s", self.caller.id, exc_info=True)


@dataclasses.dataclass(frozen=True)
class Admission:
    """The key's answer for one turn: the decision (its response headers) and a ticket, or the 429."""

    decision: ratelimit.Decision
    ticket: Ticket | None  # None when refused
    error: ApiError | None  # the 429 to raise once the decision is kept for the headers
    owned: int | None = None  # the owner's stored conversations, when asked for (`admit(owner=...)`)


def admit(
    gw: Gateway, caller: Caller | None, model: str, *, owner: str | None = None, turns: int = 1
) -> Admission | None:
    """Check the caller's model access and limits for one turn (None: the caller has no limits).

    Raises the 403 for a model the key may not use; a refused turn's `Admission` carries its 429.
    With `owner`, the key's stored conversations are counted in the same round trip (`owned`,
    for `conversation_limits.check_room` when the turn starts a new conversation). `turns` is
    what the request surely costs upstream (`turn_cost`): that many entries of the key's minute.
    """
    if not limited(caller, model):
        return None
    assert caller is not None
    renewer = slot_leases.slot_leases()
    with gw.redis.pipeline(transaction=False) as pipe:
        decide = ratelimit.admit_in(pipe, caller, lease_seconds=renewer.lease_seconds, turns=turns)
        # The key's stored conversations, in the same round trip, for the room check of a new one.
        counting = owner is not None and gw.settings.key_max_conversations > 0
        if owner is not None and counting:
            count_owned_in(pipe, owner)
        replies = pipe.execute()
    return admitted(caller, decide(replies[0]), renewer, int(replies[-1]) if counting else None)


def limited(caller: Caller | None, model: str) -> bool:
    """Whether the caller has limits to check; the 403 for a model its key may not use."""
    if caller is None or caller.id == "open":
        return False
    if not caller.limits.allows(model):
        metrics.KEY_LIMITED.labels(limit="models").inc()
        raise ApiError(
            f"This API key does not have access to model `{model}`.",
            status=403,
            error_type="invalid_request_error",
            code="model_not_found",
            param="model",
        )
    return True


def staged(caller: Caller, *, turns: int) -> tuple[list[str], list[str | int], Callable[[Any], Admission]]:
    """The quota script's keys and args for one turn, and the function that reads its reply into
    an `Admission` (for `service.state.gated`, which runs it between the door and the enqueue)."""
    renewer = slot_leases.slot_leases()
    keys, args, decide = ratelimit.admit_call(caller, lease_seconds=renewer.lease_seconds, turns=turns)
    return keys, args, lambda reply: admitted(caller, decide(reply), renewer, None)


def admitted(
    caller: Caller, decision: ratelimit.Decision, renewer: slot_leases.SlotLeases, owned: int | None
) -> Admission:
    """The key's decision as an `Admission`: a ticket whose slot is renewed, or the 429."""
    error = decision.error(caller)
    if error is not None:
        limit = LIMIT_NAMES[decision.status]
        log.info("event=key_limited key_id=%s limit=%s", caller.id, limit)
        metrics.KEY_LIMITED.labels(limit=limit).inc()
        return Admission(decision, None, error, owned)
    ticket = Ticket(caller, decision.lease, renewer=renewer)
    if caller.limits.max_concurrent:
        renewer.hold(ratelimit.turns_key(caller.id), decision.lease)
    return Admission(decision, ticket, None, owned)


def keep(admitted: Admission | None) -> None:
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


def take_ticket() -> Ticket | None:
    """Hand this request's ticket to the `Run` that will settle it when the response ends."""
    ticket: Ticket | None = g.get("ticket")
    g.ticket = None
    return ticket


def _headers(response: Response) -> Response:
    decision: ratelimit.Decision | None = g.get("rate")
    caller: Caller | None = g.get("caller")
    if decision is None and caller is not None and (caller.limits.rpm or caller.limits.tokens_per_day):
        try:  # not a turn (models, conversations): report the key's standing, count nothing
            decision = ratelimit.peek(gateway().redis, caller)
        except RedisError:
            decision = None  # the response itself is what matters
    if decision is not None:
        response.headers.update(decision.headers())
        if decision.status in (ratelimit.RPM, ratelimit.CONCURRENT):
            response.headers["retry-after-ms"] = str(max(1, decision.retry_ms))
    return response


def _settle_unclaimed(_exc: BaseException | None) -> None:
    ticket: Ticket | None = g.get("ticket")
    if ticket is not None:  # the request failed before a Run took the ticket
        ticket.settle(gateway().redis, Failed({}), None)


def init_app(app: Flask) -> None:
    """Register the response-header hook and the teardown that settles unclaimed tickets."""
    gw: Gateway = app.extensions["gateway"]
    slot_leases.init_app(app, gw.redis, gw.settings.key_slot_lease_seconds)
    app.after_request(_headers)
    app.teardown_request(_settle_unclaimed)
