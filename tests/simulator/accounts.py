"""Per-account model: who a request is, and the limits and faults that account runs into.

Upstream accounts are the scarce resource (issue 8): public bridges measured about **4
turns in flight and ~15 turns a minute per account** before the real service fails
(upstream-protocols.md B5a). The simulator enforces both, per account, and lets a test
put one account into a fault state without touching the others.

Identity (`account_of`, the one rule both dialects use):

- an access token (Copilot: `accessToken=` on the socket, `Authorization: Bearer` on
  REST) → the token itself;
- else a `_U` cookie (signed in; ChatHub's only credential) → its value, e.g. `acct-1`;
- else a `__Host-copilot-anon` cookie (Copilot's anonymous session) → `anon:<value>`;
- else `anonymous`.

Names are the raw credential values because only test credentials ever reach the
simulator and a test must be able to name the account it configures; the control API
is for tests only. (Who owns a Copilot conversation is a separate rule,
`copilot_state.identity`, where a token only authenticates.) ChatHub clients must send
their cookies on the websocket too (A5), or their turns count as `anonymous`.

What an account runs into (the answers each dialect gives live with the dialect):

- **in flight**: a chat websocket holds a `Lease` from its upgrade until its turn is over
  (or the socket ends). An upgrade beyond `max_concurrent` leases is refused with HTTP
  **502**, which is what B5a's bridge saw past four concurrent turns.
- **rate**: turns admitted in the last 60 s (by the simulator clock). A turn beyond `rpm`
  gets the dialect's throttle answer — ChatHub's type-2 `Throttled` (A7.3), Copilot's
  `chatMessageError`/`throttled` with `nextAvailableAt` (B7.3) set to when the oldest turn
  leaves the window, so a client that waits until then is admitted. (B5a's bridge saw 502s
  here too; the documented throttle frames are used because they say when to come back.)
  Rejected turns do not count toward the rate.
- **faults** (`FAULTS`), set through `POST /_sim/accounts/<name>`: every turn (and the
  REST calls the dialect would fail) answers with the dialect's error until cleared; a
  `throttled` fault lapses by itself at its `next_available_at` (default one minute on).
- **memory**: like Copilot's long-term memory and personalization (fall 2025), an account
  remembers what its users said (`remember`), in every conversation; a turn starting with
  `[sim:memory]` is answered with what the account remembers from its *other*
  conversations (`recollect`), so a test can see one conversation's facts resurface in
  another conversation of the same account, and never in another account's.

The book only lives on the asyncio loop, so it needs no locks.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

ANONYMOUS = "anonymous"
FAULTS = ("captcha", "throttled", "cloudflare", "unauthorized", "region")
"""Account states a test can force; None clears."""
WINDOW = 60.0
"""Seconds over which `rpm` counts turns."""
THROTTLE_DEFAULT = 60.0
"""How long a `throttled` fault lasts when no `next_available_at` is given."""
OVERLOAD = "overload"
"""Rejection kind: an upgrade past `max_concurrent` (HTTP 502)."""
MAX_AGENTS = 5
RATE = "rate"
"""Rejection kind: a turn past `rpm` (the dialect's throttle answer)."""
SOCKETS_KEPT = 20
"""How many Copilot sockets `sockets` lists per account (the latest)."""
ADMITTED_KEPT, ADMITTED_CHARS = 100, 80
MEMORIES_KEPT = 500
"""Per account: the most recent user messages kept for `[sim:memory]`."""
"""How many admitted turns `admitted` lists per account (the latest), and how much of each message."""


def account_of(jar: Mapping[str, str], *, access_token: str | None = None) -> str:
    """The account a request stands for (see the module docstring for the rule)."""
    if access_token:
        return access_token
    if jar.get("_U"):
        return jar["_U"]
    if jar.get("__Host-copilot-anon"):
        return f"anon:{jar['__Host-copilot-anon']}"
    return ANONYMOUS


@dataclasses.dataclass
class Account:
    """One account's settings and counters."""

    name: str
    fault: str | None = None
    next_available_at: float | None = None
    """When a `throttled` fault lapses (simulator clock)."""
    max_concurrent: int | None = None
    """Overrides the config's `account_max_concurrent` for this account (0 = unlimited)."""
    rpm: int | None = None
    """Overrides the config's `account_rpm` for this account (0 = unlimited)."""
    turns: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    starts: collections.deque[float] = dataclasses.field(default_factory=collections.deque)
    rejections: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    user_agents: list[str] = dataclasses.field(default_factory=list)
    """Distinct User-Agent headers seen (bridges present one per account; B5a binds clearance to it)."""
    sockets: collections.deque[dict[str, Any]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=SOCKETS_KEPT)
    )
    """Copilot sockets, oldest first: clientSessionId, supportedFeatures, supportedCards, userAgent."""
    admitted: collections.deque[str] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=ADMITTED_KEPT)
    )
    """The start of each admitted turn's message, in the order the turns reached the account: a
    test reads the order a gateway's scheduler let turns through from here, not from its clients."""
    memories: collections.deque[tuple[str, str]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=MEMORIES_KEPT)
    )
    """(conversation id, user message) of every turn the account answered: its long-term memory."""


class Lease:
    """One chat socket's slot on its account; `release()` is idempotent, `hold()` takes it again."""

    def __init__(self, account: Account, book: AccountBook) -> None:
        self.account = account
        self.held = True
        self._book = book

    def release(self) -> None:
        """Give the slot back (the turn is over, or the socket is gone)."""
        if self.held:
            self.held = False
            self.account.in_flight = max(0, self.account.in_flight - 1)

    def hold(self) -> None:
        """Take the slot again for another turn on the same socket (never refused: already upgraded)."""
        if not self.held:
            self.held = True
            self.account = self._book.get(self.account.name)  # a reset may have replaced it
            _enter(self.account)


def _enter(account: Account) -> None:
    account.in_flight += 1
    account.max_in_flight = max(account.max_in_flight, account.in_flight)


class AccountBook:
    """Every account the simulator has seen, with the limits read from the live config."""

    def __init__(self, *, clock: Callable[[], float], limits: Callable[[], tuple[int, int]]) -> None:
        self._clock = clock
        self._limits = limits
        self.accounts: dict[str, Account] = {}

    def get(self, name: str) -> Account:
        """The account called `name`, created on first sight."""
        account = self.accounts.get(name)
        if account is None:
            account = self.accounts[name] = Account(name)
        return account

    def limits(self, account: Account) -> tuple[int, int]:
        """(max_concurrent, rpm) in force for `account`; 0 means unlimited."""
        max_concurrent, rpm = self._limits()
        if account.max_concurrent is not None:
            max_concurrent = account.max_concurrent
        if account.rpm is not None:
            rpm = account.rpm
        return max_concurrent, rpm

    def fault(self, name: str) -> str | None:
        """The fault `name` is in now (a lapsed `throttled` fault is cleared here)."""
        account = self.accounts.get(name)
        if account is None or account.fault is None:
            return None
        if account.fault == "throttled" and (account.next_available_at or 0.0) <= self._clock():
            account.fault, account.next_available_at = None, None
            return None
        return account.fault

    def saw(self, name: str, user_agent: str | None) -> None:
        """Note the user agent of a request of `name` (the first few distinct ones are kept)."""
        agents = self.get(name).user_agents
        if user_agent and user_agent not in agents and len(agents) < MAX_AGENTS:
            agents.append(user_agent)

    def session_reused(self, name: str, client_session_id: str | None) -> bool:
        """Whether one of `name`'s recent sockets carried `client_session_id` (B1.2: new per socket)."""
        return client_session_id is not None and any(
            record["clientSessionId"] == client_session_id for record in self.get(name).sockets
        )

    def socket_opened(
        self, name: str, client_session_id: str | None, user_agent: str | None
    ) -> dict[str, Any]:
        """List a new Copilot socket of `name`; the session fills in its `setOptions` lists later."""
        record: dict[str, Any] = {
            "clientSessionId": client_session_id,
            "supportedFeatures": None,
            "supportedCards": None,
            "userAgent": user_agent,
        }
        self.get(name).sockets.append(record)
        return record

    def reject(self, name: str, kind: str) -> None:
        """Count a request of `name` refused because of `kind` (a fault name, OVERLOAD or RATE)."""
        self.get(name).rejections[kind] += 1

    def acquire(self, name: str) -> Lease | None:
        """A slot for a chat socket, or None (counted as OVERLOAD) when the account is full."""
        account = self.get(name)
        max_concurrent, _ = self.limits(account)
        if max_concurrent and account.in_flight >= max_concurrent:
            account.rejections[OVERLOAD] += 1
            return None
        _enter(account)
        return Lease(account, self)

    def admit_turn(self, name: str, text: str = "") -> float | None:
        """Count a turn of `name` whose message is `text`; if it is over the rate, count a RATE
        rejection and return when the account has room again (simulator clock, rounded up to
        whole seconds)."""
        account = self.get(name)
        now = self._clock()
        _expire(account.starts, now)
        _, rpm = self.limits(account)
        if rpm and len(account.starts) >= rpm:
            account.rejections[RATE] += 1
            return float(math.ceil(account.starts[len(account.starts) - rpm] + WINDOW))
        account.starts.append(now)
        account.turns += 1
        account.admitted.append(text[:ADMITTED_CHARS])
        return None

    def remember(self, name: str, conversation_id: str, text: str) -> None:
        """The account `name` keeps what a user said in one of its conversations."""
        if text.strip():
            self.get(name).memories.append((conversation_id, text.strip()))

    def recollect(self, name: str, conversation_id: str) -> list[str]:
        """What account `name` remembers from its conversations other than `conversation_id`."""
        return [text for conversation, text in self.get(name).memories if conversation != conversation_id]

    def throttled_until(self, name: str) -> float:
        """When the `throttled` fault of `name` lapses (for the dialects' nextAvailableAt)."""
        account = self.get(name)
        return float(math.ceil(account.next_available_at or self._clock() + THROTTLE_DEFAULT))

    def configure(self, name: str, values: Mapping[str, Any]) -> Account:
        """Apply `POST /_sim/accounts/<name>` values; a bad one raises ValueError, changing nothing."""
        unknown = set(values) - {"fault", "next_available_at", "max_concurrent", "rpm"}
        if unknown:
            allowed = "fault, next_available_at, max_concurrent, rpm"
            raise ValueError(f"unknown account keys {sorted(unknown)}; allowed: {allowed}")
        changes: dict[str, Any] = {}
        when = _number("next_available_at", values.get("next_available_at"))
        if when is not None:
            changes["next_available_at"] = when
        if "fault" in values:
            fault = values["fault"]
            if fault in (None, "", "none", "null"):
                changes.update(fault=None, next_available_at=None)
            elif fault in FAULTS:
                changes["fault"] = fault
            else:
                raise ValueError(f"fault must be one of {', '.join(FAULTS)} or null")
            if fault == "throttled" and when is None:
                changes["next_available_at"] = self._clock() + THROTTLE_DEFAULT
        for key in ("max_concurrent", "rpm"):
            if key in values:
                number = _number(key, values[key])
                limit = None if number is None else int(number)
                if limit is not None and limit < 0:
                    raise ValueError(f"{key} must not be negative")
                changes[key] = limit
        account = self.get(name)
        for key, value in changes.items():
            setattr(account, key, value)
        return account

    def view(self, account: Account) -> dict[str, Any]:
        """One account as `GET /_sim/accounts` shows it."""
        _expire(account.starts, self._clock())
        max_concurrent, rpm = self.limits(account)
        return {
            "turns": account.turns,
            "turns_last_minute": len(account.starts),
            "in_flight": account.in_flight,
            "max_in_flight": account.max_in_flight,
            "rejections": dict(account.rejections),
            "user_agents": list(account.user_agents),
            "admitted": list(account.admitted),
            "sockets": [dict(record) for record in account.sockets],
            "fault": self.fault(account.name),
            "next_available_at": account.next_available_at,
            "max_concurrent": max_concurrent,
            "rpm": rpm,
        }

    def as_json(self) -> dict[str, dict[str, Any]]:
        """Every account by name."""
        return {name: self.view(account) for name, account in self.accounts.items()}

    def reset(self) -> None:
        """Forget faults, overrides and counters; sockets still open keep their slots counted."""
        for name, account in list(self.accounts.items()):
            if not account.in_flight:
                del self.accounts[name]
                continue
            # Open sockets' leases point at this object: keep it, clear everything else.
            account.fault = account.next_available_at = account.max_concurrent = account.rpm = None
            account.turns, account.max_in_flight = 0, account.in_flight
            account.starts.clear()
            account.rejections.clear()
            account.user_agents.clear()
            account.admitted.clear()
            account.memories.clear()


def _expire(starts: collections.deque[float], now: float) -> None:
    while starts and starts[0] <= now - WINDOW:
        starts.popleft()


def _number(key: str, value: Any) -> float | None:
    """A control-API number; None for null or an empty string."""
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key} must be a number (epoch seconds)") from exc
