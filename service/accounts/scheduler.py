"""Which account a turn runs on, and the fair waiting line in front of the pool.

A turn asks for a slot with `Scheduler.acquire`. Its *candidates* are the ready accounts
it may use: only its conversation's account while that one is ready (a conversation stays
on its account), else every ready account. The answer comes from one Lua script,
`fair_line.ADMIT`, that in one atomic step

1. puts the turn in the waiting line if it is not there yet, tagged for fairness;
2. counts the free slots of every ready account (min of free concurrency and free rate; an
   account deleted, disabled or unwell since the caller's snapshot has none);
3. walks the line from its head, letting each earlier ticket reserve the candidate with
   the most headroom; if a slot is left among this turn's candidates, takes it (lease +
   rate entry) and leaves the line; else reports the turn's position.

The line and its fairness are `service.accounts.fair_line`.

A waiting turn polls (it is a cheap greenlet) and keeps its ticket alive; a ticket whose
worker died expires after `fair_line.TICKET_SECONDS` and leaves the line. When no account at all
can take the turn, `acquire` raises at once: every enabled account cooling → 429 with
`Retry-After` = the earliest end; otherwise 503 `upstream_unavailable` naming what the
operator must do.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Collection
from typing import Any

from redis import Redis
from redis.client import Pipeline

from service.accounts import capacity, fair_line, groups
from service.accounts.account import COOLING, NEEDS_ATTENTION, READY, UNREACHABLE, Account
from service.accounts.registry import Registry
from service.errors import ApiError, RateLimited, UpstreamUnavailable

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25


@dataclasses.dataclass(frozen=True)
class Lease:
    """A slot held on one account; refresh it while the turn runs, release it after."""

    account: Account
    id: str
    prefix: str
    # `account` was read by the granting script itself (fresh credentials), and the door's
    # claim named by `acquire(door=...)` ended in that same step.
    fresh: bool = False
    door_ended: bool = False
    spare: bytes | None = None  # the account's spare upstream conversation, taken with the slot


class Scheduler:
    """Hands out account slots to turns, fairly, waiting when the pool is full."""

    def __init__(
        self,
        registry: Registry,
        *,
        max_concurrent: int,
        rpm: int,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = registry
        self.redis = registry.redis
        self.prefix = registry.prefix
        self.max_concurrent = max_concurrent
        self.rpm = rpm
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.sleep = sleep
        self._admit = self.redis.register_script(fair_line.ADMIT)

    def acquire(
        self,
        owner: str,
        *,
        preferred: str | None = None,
        exclude: Collection[str] = (),
        should_stop: Callable[[], bool] = lambda: False,
        on_position: Callable[[int], None] = lambda position: None,
        group: str = groups.DEFAULT_GROUP,
        door: str | None = None,
        spares: str | None = None,
        ticket: str = "",
    ) -> Lease | None:
        """Wait for a slot (None if `should_stop` turned true first); raises if no account can serve.

        `preferred` is the conversation's account: used while it is ready, else any ready one.
        `on_position(n)` is called whenever the turn's place in the line changes. Only
        `group`'s accounts are candidates (failover stays inside it too). `door`, the
        owner's door claim key (`admission.pending_key`), ends with the grant, in its script;
        with `spares` (a key prefix) the granted account's spare conversation comes with it.
        `ticket`: one already in the line (its dequeue's grant found the pool full).
        """
        ticket = ticket or fair_line.new_ticket()
        position = 0
        try:
            while True:
                lease, now_at = self.poll(
                    ticket, owner, preferred=preferred, exclude=exclude, group=group, door=door, spares=spares
                )
                if lease is not None:
                    ticket = ""  # it left the line inside the script
                    return lease
                if now_at != position:
                    position = now_at
                    on_position(position)
                if should_stop():
                    return None
                self.sleep(POLL_SECONDS * (0.75 + random.random() / 2))
        finally:
            if ticket:
                self.leave(ticket)

    def poll(
        self,
        ticket: str,
        owner: str,
        *,
        preferred: str | None = None,
        exclude: Collection[str] = (),
        group: str = groups.DEFAULT_GROUP,
        door: str | None = None,
        spares: str | None = None,
    ) -> tuple[Lease | None, int]:
        """One atomic try: (the lease, 0) or (None, the ticket's position in the line)."""
        ready, now = self._ready(group, preferred=preferred, exclude=exclude)
        want = [a for a in ready if a.id == preferred] or ready
        args: list[str | float | int] = [
            self.prefix,
            repr(now),
            ticket,
            owner,
            ",".join(a.id for a in want),
            fair_line.TICKET_SECONDS,
            self.lease_seconds,
            capacity.WINDOW_SECONDS,
            fair_line.SCAN,
        ]
        for account in ready:
            args.extend((account.id, *account.limits(self.max_concurrent, self.rpm)))
        keys = [door or "", spares or ""] if door or spares else []
        reply = self._admit(keys=keys, args=args)
        if reply[0]:
            return lease_from(reply, ticket, self.prefix, door=door is not None), 0
        return None, int(reply[1])

    def _ready(
        self, group: str, *, preferred: str | None, exclude: Collection[str]
    ) -> tuple[list[Account], float]:
        """The group's accounts ready for a turn, and now; none ready is a 503 (an empty group its own)."""
        accounts = groups.members(self.registry.all(), group)
        if preferred and all(a.id != preferred for a in accounts):
            accounts = groups.members(self.registry.all(fresh=True), group)  # maybe just added or moved
        now = self.clock()
        ready = [a for a in accounts if a.state(now) == READY and a.id not in exclude]
        if not ready:  # before failing the turn, make sure no account was refreshed meanwhile
            accounts = groups.members(self.registry.all(fresh=True), group)
            ready = [a for a in accounts if a.state(now) == READY and a.id not in exclude]
        if not ready:
            if not accounts and self.registry.all():
                raise groups.empty_group(group)
            raise pool_unavailable(accounts, now, exclude)
        return ready, now

    def refresh(self, pipe: Redis | Pipeline, lease: Lease) -> None:
        """Keep the lease alive (the turn's watcher calls this with its pipeline)."""
        capacity.refresh(
            pipe, self.prefix, lease.account.id, lease.id, expires=self.clock() + self.lease_seconds
        )

    def note_turn(self, lease: Lease, number: int) -> None:
        """Turn `number` (2, 3, ...) started under `lease`: it counts in the account's minute too."""
        capacity.note_turn(
            self.redis, self.prefix, lease.account.id, f"{lease.id}:{number}", now=self.clock()
        )

    def release(self, lease: Lease) -> None:
        """Give the slot back."""
        capacity.release(self.redis, self.prefix, lease.account.id, lease.id, now=self.clock())

    def leave(self, ticket: str) -> None:
        """Take a ticket out of the line (the turn stopped waiting)."""
        line = f"{self.prefix}:line"
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(line, ticket)
            pipe.hdel(f"{line}:want", ticket)
            pipe.zrem(f"{line}:alive", ticket)
            pipe.execute()


def lease_from(reply: list[Any], ticket: str, prefix: str, *, door: bool) -> Lease:
    """The lease a granting `fair_line.ADMIT` reply holds (the account as the script read it)."""
    pick, fields = reply[1].decode(), reply[2]
    chosen = Account.from_hash(pick, dict(zip(fields[::2], fields[1::2], strict=True)))
    spare = reply[3] if len(reply) > 3 else None
    return Lease(chosen, ticket, prefix, fresh=True, door_ended=door, spare=spare or None)


def pool_unavailable(accounts: list[Account], now: float, exclude: Collection[str] = ()) -> ApiError:
    """The error for a turn no account can take: 429 while some cool, else 503 for the operator."""
    cooling = [a for a in accounts if a.state(now) == COOLING]
    if cooling:
        until = min(a.cooling_until for a in cooling)
        return RateLimited(
            "Every upstream account is cooling down after the upstream throttled it; "
            f"retry in {max(1, round(until - now))} s.",
            retry_after=max(1.0, until - now),
        )
    stuck = [a for a in accounts if a.state(now) in (NEEDS_ATTENTION, UNREACHABLE)]
    if stuck:
        return UpstreamUnavailable(
            "No upstream account can take turns; the operator must act. "
            + " ".join(advice(a, now) for a in stuck)
        )
    if exclude and any(a.id in exclude for a in accounts):
        return UpstreamUnavailable(
            "The upstream account this turn was on failed and no other account is ready; "
            "add an account with POST /admin/accounts (or `deploy/admin add`)."
        )
    return UpstreamUnavailable(
        "No upstream account is enabled; the operator must enable or add one with "
        "POST /admin/accounts (or `deploy/admin add`)."
    )


def advice(account: Account, now: float) -> str:
    """One account's state, its last error, and what fixes it (said the same in /readyz and the 503).

    Accounts seeded from UPSTREAM_COOKIES (`env-N`) are fixed by changing that line (the admin
    route works for them too); accounts added at run time only through the admin route.
    """
    state = account.state(now)
    error = account.error_message or account.error_code
    what = f"{account.id} ({account.label or 'no label'}) is {state}: {error}."
    if state == UNREACHABLE:
        return f"{what} Nothing to refresh: the gateway cannot connect to the upstream."
    if account.source == "env":
        number = account.id.removeprefix("env-")
        return (
            f"{what} Refresh it in UPSTREAM_COOKIES (line {number}) and restart, or with "
            f"PATCH /admin/accounts/{account.id} (`deploy/admin update {account.id} --cookies -`)."
        )
    return (
        f"{what} Refresh its cookies or token with PATCH /admin/accounts/{account.id} "
        f"(`deploy/admin update {account.id} --cookies -`)."
    )
