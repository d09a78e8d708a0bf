"""One idle upstream websocket per account, kept open between turns, as a browser tab keeps its own.

Copilot's `send` names its conversation (B2), so one socket serves every turn of an
account, and a browser pays the TCP, TLS and upgrade round trips (and the `connected`,
`setOptions`, `reportLocalConsents` preamble, B1.3) once per tab, not once per turn. The
worker does the same: a Copilot turn that ended cleanly (`done`, the drain after it, the
socket still open) parks its socket here; the account's next turn in this process takes it
and sends at once.

Browser-like limits: at most one idle socket per account per worker process. A turn that
finds the slot empty (another turn holds the socket, or none was parked) opens its own and
parks it afterwards only if the slot is still empty; otherwise it closes it.

A parked socket is never used for a send unless it is still what a fresh one would be:

- `take` discards it when the account's socket identity changed (`fingerprint`: the
  upgrade's URL, with its access token and clientSessionId, its headers with the
  cookies, the transport, profile and proxy), e.g. credentials refreshed via the admin API;
- or when it sat idle longer than UPSTREAM_SOCKET_IDLE_SECONDS;
- or when anything arrived on it while parked (`Socket.idle` is False: the server closed
  it, or sent a frame nobody read), so a late frame can never be mistaken for the next
  turn's answer and no turn is ever sent twice.

`discard(account)` drops an account's socket when a turn marks the account unwell
(`workers.account_pool.AccountLane.fail_over`); the worker's `keep_swept` greenlet closes
sockets past the idle limit, those of accounts disabled, needing attention or deleted, and
those whose stored identity the admin API refreshed (`identity_stamp` of the account's
cookies, token, browser identity and proxy, recorded when the socket is parked), from the
process's pool snapshot within SWEEP_SECONDS, with no turn needed (`sweep` also runs on every
park and take). A keep-alive ping that reaches a parked socket is answered by the transport
and does not count against it (`Socket.idle`). UPSTREAM_KEEP_SOCKETS=0 turns parking off
(a socket per turn, as before).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from workers.upstream.wire import Socket

log = logging.getLogger(__name__)

ROTATING_COOKIES = frozenset({"__cf_bm"})
"""Cookies the upstream itself rotates on its answers (Cloudflare's bot cookie, every ~30 min):
a new value is not a new identity, and a browser keeps its socket across it."""


def fingerprint(url: str, headers: Mapping[str, str], transport: Iterable[str]) -> str:
    """A digest of everything a socket's upgrade presented; equal digests mean the same identity.

    Secrets (token, cookies) only enter the digest, never the park itself.
    """
    digest = hashlib.sha256()
    for name, value in sorted((name.lower(), value) for name, value in headers.items()):
        if name == "cookie":
            value = _without_rotating(value)
        digest.update(f"{name}\x00{value}\x01".encode())
    for part in (url, *transport):
        digest.update(f"{part}\x02".encode())
    return digest.hexdigest()


IDENTITY_FIELDS = (
    "sealed_cookies",
    "sealed_token",
    "user_agent",
    "client_hints",
    "accept_language",
    "impersonate",
    "sealed_proxy",
)
"""The stored account fields a socket's upgrade is made of (`service.accounts.account.Account`)."""


def identity_stamp(account: Any) -> str:
    """A digest of an account's stored identity: it changes when the admin API refreshes any of it.

    Sealed values are digested as stored (never unsealed here); re-sealing them, which only a
    refresh does, changes the stamp, which at worst closes a socket that was still good.
    """
    digest = hashlib.sha256()
    for name in IDENTITY_FIELDS:
        digest.update(f"{getattr(account, name, '')}\x00".encode())
    return digest.hexdigest()


def _without_rotating(cookie: str) -> str:
    kept = []
    for pair in cookie.split(";"):
        name = pair.split("=", 1)[0].strip()
        if name and name not in ROTATING_COOKIES:
            kept.append(pair.strip())
    return "; ".join(sorted(kept))


@dataclasses.dataclass
class _Parked:
    socket: Socket
    identity: str
    since: float
    stamp: str | None = None  # the account's `identity_stamp` when parked (None: not known yet)


class SocketPark:
    """The idle sockets of one worker process, one slot per account (see the module docstring)."""

    def __init__(self, *, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._slots: dict[str, _Parked] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._slots)

    def take(self, account: str, identity: str) -> Socket | None:
        """The account's idle socket if it is still usable for `identity`, else None (open a new one)."""
        self.sweep()
        with self._lock:
            parked = self._slots.pop(account, None)
        if parked is None:
            return None
        reason = ""
        if parked.identity != identity:
            reason = "identity_changed"
        elif not parked.socket.idle():
            reason = "not_idle"  # closed by the server, or a frame arrived while parked
        if reason:
            _close(parked.socket, account, reason)
            return None
        log.debug("event=upstream_socket_reused account=%s idle=%.1f", account, self._clock() - parked.since)
        return parked.socket

    def put(self, account: str, identity: str, socket: Socket) -> bool:
        """Park `socket` if the account's slot is empty (True); else close it (a browser holds one)."""
        self.sweep()
        stamp = _stamps().get(account)
        with self._lock:
            parked = self.idle_seconds > 0 and account not in self._slots
            if parked:
                self._slots[account] = _Parked(socket, identity, self._clock(), stamp)
        if not parked:
            _close(socket, account, "slot_taken")
        return parked

    def discard(self, account: str, reason: str = "discarded") -> None:
        """Close the account's idle socket, if any (the account was marked unwell or changed)."""
        with self._lock:
            parked = self._slots.pop(account, None)
        if parked is not None:
            _close(parked.socket, account, reason)

    def sweep(self) -> None:
        """Close every socket idle longer than `idle_seconds`."""
        limit = self._clock() - self.idle_seconds
        with self._lock:
            old = [account for account, parked in self._slots.items() if parked.since <= limit]
            expired = [(account, self._slots.pop(account)) for account in old]
        for account, parked in expired:
            _close(parked.socket, account, "idle_limit")

    def retain(self, accounts: Mapping[str, str]) -> None:
        """Close the idle sockets of every account not in `accounts` (disabled, unwell or deleted),
        or whose identity stamp changed since its socket was parked (the admin API refreshed it)."""
        changed: list[str] = []
        with self._lock:
            gone = [account for account in self._slots if account not in accounts]
            for account, parked in self._slots.items():
                if account in accounts and parked.stamp is None:
                    parked.stamp = accounts[account]  # first seen by a sweep: the identity it has now
                elif account in accounts and parked.stamp != accounts[account]:
                    changed.append(account)
        for account in gone:
            self.discard(account, "account_unusable")
        for account in changed:
            self.discard(account, "identity_changed")

    def clear(self) -> None:
        """Close every idle socket (a worker that stops)."""
        with self._lock:
            slots, self._slots = self._slots, {}
        for account, parked in slots.items():
            _close(parked.socket, account, "cleared")


def _close(socket: Socket, account: str, reason: str) -> None:
    log.debug("event=upstream_socket_dropped account=%s reason=%s", account, reason)
    socket.close()


SWEEP_SECONDS = 5.0  # the longest a sweep waits (a quarter of the idle limit when that is shorter)
_PARKS: dict[float, SocketPark] = {}
_PARKS_LOCK = threading.Lock()
_USABLE: list[Callable[[], Mapping[str, str] | None]] = []
"""The sweeper's `usable`, so a socket parked between sweeps records its account's stamp at once."""


def _stamps() -> Mapping[str, str]:
    """The usable accounts' identity stamps from the process's snapshot (empty if unknown)."""
    return (_USABLE[0]() or {}) if _USABLE else {}


def park_for(idle_seconds: float) -> SocketPark:
    """This process's park (one per idle limit, so tests with different settings stay apart)."""
    with _PARKS_LOCK:
        park = _PARKS.get(idle_seconds)
        if park is None:
            park = _PARKS[idle_seconds] = SocketPark(idle_seconds=idle_seconds)
        return park


def keep_swept(
    *,
    sleep: Callable[[float], None],
    stop: Callable[[], bool] = lambda: False,
    usable: Callable[[], Mapping[str, str] | None] = lambda: None,
) -> None:
    """Close idle sockets past their limit, of accounts no longer `usable()`, or whose identity
    changed, with no turn to do it.

    The worker's greenlet: `usable()` maps the accounts that may still run turns (not
    disabled, not needing attention, not deleted) to their `identity_stamp`, None when that
    is not known right now.
    """
    _USABLE[:] = [usable]
    while not stop():
        with _PARKS_LOCK:
            parks = list(_PARKS.values())
        accounts = usable()
        for park in parks:
            park.sweep()
            if accounts is not None:
                park.retain(accounts)
        sleep(min([park.idle_seconds / 4 for park in parks] + [SWEEP_SECONDS]))


def clear_all() -> None:
    """Close every idle socket of this process (a worker that stops; tests between cases)."""
    _USABLE.clear()
    with _PARKS_LOCK:
        parks = list(_PARKS.values())
    for park in parks:
        park.clear()


def discard(account: str, reason: str = "discarded") -> None:
    """Drop `account`'s idle socket from every park of this process."""
    with _PARKS_LOCK:
        parks = list(_PARKS.values())
    for park in parks:
        park.discard(account, reason)


@dataclasses.dataclass(frozen=True)
class SocketSlot:
    """What a client needs to use its account's slot: the park, the account, the transport's identity.

    `transport` names what the socket goes through besides its URL and headers (transport
    kind, TLS profile, proxy, CA bundle), so a change of any of them is a change of identity.
    """

    park: SocketPark
    account: str
    transport: tuple[str, ...] = dataclasses.field(repr=False)

    def identity(self, url: str, headers: Mapping[str, str]) -> str:
        """The fingerprint of a socket opened to `url` with `headers` through this transport."""
        return fingerprint(url, headers, self.transport)

    def take(self, identity: str) -> Socket | None:
        """The account's parked socket for `identity`, if usable."""
        return self.park.take(self.account, identity)

    def put(self, identity: str, socket: Socket) -> bool:
        """Park the socket after a clean turn (or close it when the slot is taken)."""
        return self.park.put(self.account, identity, socket)
