"""The grants a dequeue makes ahead of its turn (`workers.dequeue`), until the turn takes them.

They stand apart from `workers.account_pool` because two parties hand them over, not one
lane: the worker's dequeue keeps a grant per job (`keep_ahead`), the turn's lane takes it
with its first `take` (`granted_ahead`), and the worker drops what no turn took (`drop`).
This module is that hand-over and nothing else; the lane that uses a grant lives in
`workers.account_pool`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from redis import Redis

from service.accounts.scheduler import Lease
from workers.redis_outage import REDIS_DOWN

if TYPE_CHECKING:
    from workers.account_pool import Pool

_ahead: dict[str, Ahead] = {}  # per job id: granted with its dequeue, until its turn builds its lane


@dataclasses.dataclass(frozen=True)
class Ahead:
    """What a turn's dequeue did for its first `take` (`workers.dequeue`): its ticket in the fair
    line and, unless the pool was full, the slot granted (the door's claim ended with it)."""

    ticket: str  # "" when none was taken (no account of the group was ready)
    lease: Lease | None
    preferred: str | None = None  # the account asked for: the continued conversation's handle's
    # A continued turn's stored conversation as the dequeue read it: document, handle, metadata.
    stored: tuple[bytes | None, bytes | None, bytes | None] | None = None
    images: dict[str, bytes] = dataclasses.field(default_factory=dict)  # parked image bytes by key


class Parked:
    """A turn's Redis for `workers.image_fetch.load_images`: the image bytes its dequeue read, else
    Redis itself (`service.images.unpark` reads with `get`)."""

    def __init__(self, redis: Redis, read: dict[str, bytes]) -> None:
        self.redis = redis
        self.read = read

    def get(self, key: str) -> Any:
        """The bytes under `key`, as the dequeue read them or from Redis now."""
        found = self.read.get(key)
        return found if found is not None else self.redis.get(key)


def drop(pool: Pool, ahead: Ahead) -> None:
    """A dequeue's grant no turn took (it failed before asking): free the slot, or leave the line."""
    if ahead.lease is not None:
        pool.scheduler.release(ahead.lease)
    elif ahead.ticket:
        pool.scheduler.leave(ahead.ticket)


def keep_ahead(job_id: str, ahead: Ahead) -> None:
    """Hold a dequeue's grant for the job's turn (`granted_ahead`)."""
    _ahead[job_id] = ahead


def granted_ahead(job_id: str) -> Ahead | None:
    """The grant the job's dequeue made, once (the turn's lane, or the worker dropping it)."""
    return _ahead.pop(job_id, None)


def stored_ahead(job_id: str) -> tuple[bytes | None, bytes | None, bytes | None] | None:
    """The stored conversation the job's dequeue read for its turn (the grant stays for the lane)."""
    ahead = _ahead.get(job_id)
    return ahead.stored if ahead is not None else None


def drop_untaken(pool: Pool | None, job_id: str) -> None:
    """The job ended: free the grant its dequeue made if its turn never took it (the turn failed
    before building its lane). Redis unreachable: the slot's lease and the ticket expire by themselves."""
    leftover = granted_ahead(job_id)
    if leftover is None or pool is None:
        return
    try:
        drop(pool, leftover)
    except REDIS_DOWN:
        pass
