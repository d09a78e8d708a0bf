"""The worker's side of the account pool: a turn's hold on an account, failover, and the prober.

`AccountLane` is what `workers.turn.TurnRunner` holds for one turn:

    lane.take(preferred)  wait (fairly, publishing `queued` positions) for a slot on the
                          conversation's account, or on the ready account with the most
                          headroom; returns the account's `Credentials`, None if cancelled
    lane.fail_over(exc)   an upstream failure before any token reached the client: record
                          what it says about the account (cooling / needs_attention) and
                          say whether the turn should move to another account
    lane.refresh(pipe)    keep the slot's lease alive (the turn's watcher)
    lane.release()        give the slot back

Waiting happens inside the job (a greenlet): the turn's liveness lease is kept fresh by
the watcher meanwhile, so the web tier does not mistake a queued turn for a lost worker.
Waiting counts towards JOB_TIMEOUT; the web tier's admission check keeps expected waits
under QUEUE_MAX_WAIT_SECONDS, far below it; the lane ends
the door's claim for its turn once the turn takes a slot or stops waiting.

One `Pool` per worker process (`pool_for`), so the registry snapshot is shared by the
process's turns (and by `account_prober`, which probes accounts needing attention).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from service.accounts import admission, health
from service.accounts.account import DISABLED, NEEDS_ATTENTION, READY, Account, AccountNotFound
from service.accounts.groups import DEFAULT_GROUP
from service.accounts.registry import Registry
from service.accounts.scheduler import Lease, Scheduler
from service.accounts.sealing import SealingError
from service.errors import UpstreamUnavailable
from service.events import Queued
from service.runtime import metrics, trace
from service.runtime.settings import Settings
from service.state.relay_publisher import Publisher
from workers import spare_conversations
from workers.dequeue_grants import Ahead, drop
from workers.upstream import Credentials, socket_park
from workers.upstream.socket_park import identity_stamp

log = logging.getLogger(__name__)

_pools: dict[tuple[int, str], Pool] = {}


class Pool:
    """The process's registry and scheduler for one settings/Redis pair."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.registry = Registry(redis, namespace=settings.queue_name, secret_key=settings.secret_key)
        self.scheduler = Scheduler(
            self.registry,
            max_concurrent=settings.account_max_concurrent,
            rpm=settings.account_rpm,
            lease_seconds=2 * settings.worker_lease_seconds,
        )
        # Without SECRET_KEY nothing secret may be stored, so an anonymous account's session
        # cookies (Copilot) stay in this process only.
        self.local_jars: dict[str, str] = {}

    def cookie_sink(self, account_id: str) -> Callable[[str], None]:
        """Where a client reports the account's updated cookie header: the registry, for every worker."""

        def store(header: str) -> None:
            try:
                self.registry.store_cookies(account_id, header)
            except SealingError:
                self.local_jars[account_id] = header

        return store

    def credentials(self, account: Account) -> Credentials:
        """The account's opened secrets, for building its client."""
        return Credentials(
            id=account.id,
            cookies=self.registry.cookies(account) or self.local_jars.get(account.id, ""),
            access_token=self.registry.access_token(account),
            user_agent=account.user_agent,
            identity=account.identity(),
            proxy=self.registry.proxy(account),
        )

    def seed(self) -> None:
        """Seed `env-N` accounts from UPSTREAM_COOKIES (idempotent across processes)."""
        self.registry.seed(self.settings.upstream_cookies, access_token=self.settings.copilot_access_token)


def pool_for(settings: Settings, redis: Redis) -> Pool:
    """This process's pool for these settings and Redis client."""
    key = (id(redis), settings.queue_name)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = Pool(settings, redis)
    return pool


def usable_accounts(pool: Pool) -> Callable[[], dict[str, str] | None]:
    """The accounts that may run turns (not disabled or needing attention), each with a digest of
    its stored identity (`socket_park.identity_stamp`), from the process's snapshot (kept fresh off
    the path by `keep_warm`); None while Redis is unreachable."""

    def usable() -> dict[str, str] | None:
        now = time.time()
        try:
            accounts = pool.registry.all()
        except RedisError:
            return None
        return {
            account.id: identity_stamp(account)
            for account in accounts
            if account.state(now) not in (DISABLED, NEEDS_ATTENTION)
        }

    return usable


class AccountLane:
    """One turn's hold on the pool; see the module docstring."""

    def __init__(
        self,
        pool: Pool,
        owner: str,
        publisher: Publisher,
        should_stop: Callable[[], bool],
        group: str = DEFAULT_GROUP,
        ahead: Ahead | None = None,
    ) -> None:
        self.pool = pool
        self.ahead = ahead  # granted with the job's dequeue, for the first `take` of a new conversation
        self.owner = owner
        self.group = group  # the key's account group: the only accounts this turn may use
        self.publisher = publisher
        self.should_stop = should_stop
        self.lease: Lease | None = None
        self.tried: set[str] = set()
        self.admitted = True  # the door's claim for this turn, until it takes a slot or stops waiting
        self.turns = 0  # upstream turns started under the held lease (its first is in the ledger already)
        self.wants_spare = False  # take the account's spare conversation with the slot (`take(spare=True)`)

    def _acquire(self, preferred: str | None) -> Lease | None:
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            if ahead.lease is not None:
                # The dequeue chose among the accounts ready when the worker began to wait; the
                # grant read the account afresh, so one marked unwell meanwhile is given back.
                fresh = ahead.lease.account.state(self.pool.scheduler.clock()) == READY
                spares = self.pool.settings.upstream_spare_conversations and ahead.preferred is None
                asked = preferred == ahead.preferred and self.wants_spare == spares
                if fresh and asked and preferred in (None, ahead.lease.account.id):
                    return ahead.lease  # what this turn asks for: its conversation's account, or any
                self.pool.scheduler.release(ahead.lease)  # not what it asks for: ask again
                self.admitted = self.admitted and not ahead.lease.door_ended  # the grant ended it
                if not fresh:
                    self.pool.registry.all(fresh=True)  # so the line does not choose from stale states
            else:
                ticket = ahead.ticket  # the pool was full: wait on in the line with that ticket
                return self._line(preferred, ticket)
        return self._line(preferred, "")

    def _line(self, preferred: str | None, ticket: str) -> Lease | None:
        return self.pool.scheduler.acquire(
            self.owner,
            preferred=preferred,
            exclude=self.tried,
            should_stop=self.should_stop,
            on_position=self._queued,
            group=self.group,
            # The door's claim ends in the granting script (one round trip, not two).
            door=admission.pending_key(self.pool.registry.prefix, self.owner) if self.admitted else None,
            spares=spare_conversations.prefix(self.pool.registry.prefix) if self.wants_spare else None,
            ticket=ticket,
        )

    def take(self, preferred: str | None, *, spare: bool = False) -> Credentials | None:
        """Wait for a slot; the account's credentials, or None if the turn was cancelled meanwhile.

        `spare`: the turn starts a new upstream conversation; the account's spare, if it has
        one, comes with the slot (`spare()`).
        """
        self._give_back()
        self.wants_spare = spare
        try:
            lease = self._waited(preferred)
        except UpstreamUnavailable:
            if self.pool.registry.seeded():
                metrics.GROUP_UNAVAILABLE.labels(group=self.group).inc()
                raise
            # A Redis that restarted without its data forgot the pool: seed it again, as a
            # worker does at start-up, instead of failing every turn until a worker restarts.
            log.warning("event=account_pool_reseeded reason=registry_empty")
            self.pool.seed()
            lease = self._waited(preferred)
        if lease is None:
            return None
        self.lease = lease
        self.turns = 0
        metrics.GROUP_TURNS.labels(group=self.group).inc()
        log.info(
            "event=account_taken account=%s group=%s preferred=%s",
            lease.account.id,
            self.group,
            preferred or "-",
        )
        try:
            # Credentials are read now, not from the pool snapshot: a refresh made a moment ago counts
            # (the granting script returns the account as it is at the grant).
            account = lease.account if lease.fresh else self.pool.registry.get(lease.account.id)
            credentials = self.pool.credentials(account)
            trace.mark("credentials")
            return credentials
        except AccountNotFound:  # deleted since the slot was granted
            self.tried.add(lease.account.id)
            return self.take(None)
        except SealingError as exc:  # SECRET_KEY changed: only the operator can fix it
            raise UpstreamUnavailable(f"Account {lease.account.id}'s secrets cannot be read: {exc}.") from exc

    def _waited(self, preferred: str | None) -> Lease | None:
        """`_acquire`, then end the door's claim (`admission.started`): the turn no longer waits."""
        lease = None
        try:
            lease = self._acquire(preferred)
            return lease
        finally:
            trace.mark("granted")
            if lease is not None and lease.door_ended:
                self.admitted = False  # ended by the grant itself
            if self.admitted:
                self.admitted = False
                try:
                    admission.started(self.pool.registry.redis, self.pool.registry.prefix, self.owner)
                except RedisError:  # the claim lapses by itself
                    log.warning("event=admission_claim_not_ended")
                trace.mark("door_started")

    def spare(self) -> bytes | None:
        """The spare conversation taken with the current slot (once), if any."""
        lease = self.lease
        if lease is None or lease.spare is None:
            return None
        raw, self.lease = lease.spare, dataclasses.replace(lease, spare=None)
        return raw

    def fail_over(self, exc: BaseException) -> bool:
        """Record what `exc` says about the account; True if the turn should try another account."""
        if self.lease is None or not self.pool.settings.account_health:
            return False
        verdict = health.classify(exc)
        if verdict is None:
            return False
        account_id = self.lease.account.id
        if verdict.kind == "unreachable":  # the upstream, not the account: the turn fails as it is
            health.connection_failed(self.pool.registry, account_id, verdict, time.time())
            return False
        health.record(self.pool.registry, account_id, verdict, time.time())
        socket_park.discard(account_id, "account_unwell")  # its idle socket speaks for an unwell account
        self.tried.add(account_id)
        return True

    def note_turn(self) -> None:
        """An upstream turn starts on the held account: every one after the lease's first is recorded."""
        lease = self.lease
        if lease is None:
            return
        self.turns += 1
        if self.turns > 1:
            self.pool.scheduler.note_turn(lease, self.turns)

    def refresh(self, pipe: Redis | Pipeline) -> None:
        """Keep the held slot's lease alive (called by the turn's watcher)."""
        lease = self.lease
        if lease is not None:
            self.pool.scheduler.refresh(pipe, lease)

    def release(self) -> None:
        """Give the held slot back, if any (and one granted with the dequeue but never taken)."""
        self._give_back()
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            drop(self.pool, ahead)

    def _give_back(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            self.pool.scheduler.release(lease)

    def _queued(self, position: int) -> None:
        self.publisher.event(Queued(position))
