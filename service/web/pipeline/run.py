"""One completion as a request serves it, and what is freed when that request ends.

A `Run` is a turn this request started, or one it attached to by Idempotency-Key.
`close` is the one place a run's resources are given back: the relay subscription,
the queued job or the running turn nobody will read, the conversation lock of a dead
worker, the Idempotency-Key claim of a failed turn, and the key's quota ticket.
"""

from __future__ import annotations

import dataclasses
import logging

from redis.exceptions import RedisError

from service.events import Failed, Terminal
from service.state import idempotency, locks
from service.state.relay_subscription import Subscription
from service.turns import TurnRequest, request_cancel
from service.web.http.extension import Gateway
from service.web.pipeline import quota
from service.web.pipeline.answer import Answer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """One completion as this request serves it: a turn it started, or one it attached to."""

    turn: TurnRequest
    sub: Subscription
    idempotency_key: str | None = None
    attached: bool = False
    # The key's admitted-turn ticket (settled in `close`), handed over by the request that built the Run.
    ticket: quota.Ticket | None = None
    answer: Answer | None = None  # what was sent, for the key's token usage (each surface sets it)
    # Seconds the turn outlives its client's disconnect for a resume (`pipeline.resume`); 0: none.
    grace: float = 0.0
    # A background response's turn: no disconnect of any reader touches it.
    detached: bool = False
    turns_remaining: int | None = None  # from a collected answer's limits event (a response header)
    closed: bool = False

    @property
    def survives_disconnect(self) -> bool:
        """Whether the turn keeps running when this request's client goes away."""
        return self.detached or self.grace > 0

    def close(self, gw: Gateway, terminal: Terminal | None) -> None:
        """Unsubscribe; cancel what nobody will read; free the claim of a failed turn.

        `terminal` is the event that ended the response, or None if the client went
        away first. A turn with an Idempotency-Key is not cancelled when its client
        disappears: the SDK's retry will attach to it. Nor is one that survives a
        disconnect (`survives_disconnect`): its grace (`pipeline.resume`) decides.
        Only the first call acts.
        """
        if self.closed:
            return
        self.closed = True
        turn = self.turn
        try:
            self._give_back(gw, terminal)
        except RedisError as exc:  # Redis is down: the lock, claim and job expire by themselves
            log.warning("event=cleanup_failed completion_id=%s error=%r", turn.completion_id, exc)
        except Exception:
            log.warning("event=cleanup_failed completion_id=%s", turn.completion_id, exc_info=True)
        finally:
            self.sub.close()
            if self.ticket is not None:
                self.ticket.settle(gw.redis, terminal, None if self.attached else self.answer)

    def _give_back(self, gw: Gateway, terminal: Terminal | None) -> None:
        """Cancel or dequeue what nobody will read, and free the claim of a failed turn."""
        turn = self.turn
        finished = terminal is not None and not (isinstance(terminal, Failed) and terminal.synthetic)
        free_claim = isinstance(terminal, Failed)
        left = terminal is None and self.survives_disconnect
        if not finished and not self.attached and not left:
            free_claim = self._drop_unread(gw, terminal) or free_claim
        if self.idempotency_key and free_claim:
            idempotency.release(gw.redis, turn.owner, self.idempotency_key, turn.completion_id)

    def _drop_unread(self, gw: Gateway, terminal: Terminal | None) -> bool:
        """Dequeue or cancel the unread turn; True when it never started (its claim is then freed too)."""
        turn = self.turn
        dequeued = bool(gw.queue.remove(turn.completion_id))
        if dequeued:
            # Never started, and now never will: free what the turn held.
            if turn.lock_token:
                locks.release(gw.redis, turn.conversation_id, turn.lock_token)
        elif self.idempotency_key is None or terminal is not None:
            log.info("event=completion_abandoned completion_id=%s", turn.completion_id)
            request_cancel(gw.redis, turn.completion_id)
        lost = isinstance(terminal, Failed) and terminal.error.get("code") == "worker_lost"
        if turn.lock_token and lost:
            # Its worker died holding the conversation's lock: free it now, not in 2× the lease.
            locks.release(gw.redis, turn.conversation_id, turn.lock_token)
        return dequeued
