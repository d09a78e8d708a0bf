"""The simulator's memory: configuration, conversations, counters and its clock.

Everything a test may want to inspect or steer lives in one `SimulatorState`, owned by
the server process and shown through the control API. The clock is injectable
(`clock_offset`) so expiry can be tested without waiting six hours. The state is only
touched from the asyncio loop, so it needs no locks.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

CONFIG_KEYS = ("max_turns", "expiry_seconds", "clock_offset", "token_delay", "words_per_update", "linger")
"""The settings the control API may change at run time."""


@dataclasses.dataclass
class SimConfig:
    """Behaviour knobs; the CLI sets the defaults, `POST /_sim/config` changes them."""

    token_delay: float = 0.005
    max_turns: int = 30
    expiry_seconds: float = 21600.0
    words_per_update: int = 1
    clock_offset: float = 0.0
    linger: float = 5.0
    """Seconds to wait for the client to close after a turn before closing ourselves."""

    def update(self, values: dict[str, Any]) -> None:
        """Apply control-API values, coercing types; unknown keys or bad values raise ValueError."""
        for key, value in values.items():
            if key not in CONFIG_KEYS:
                raise ValueError(f"unknown config key {key!r}; allowed: {', '.join(CONFIG_KEYS)}")
            kind = type(getattr(self, key))
            number = kind(float(value)) if kind is int else kind(value)
            if key in ("max_turns", "words_per_update") and number < 1:
                raise ValueError(f"{key} must be at least 1")
            if key in ("token_delay", "expiry_seconds", "linger") and number < 0:
                raise ValueError(f"{key} must not be negative")
            setattr(self, key, number)

    def as_json(self) -> dict[str, Any]:
        """The config as the control API returns it."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Turn:
    """One completed turn, as the control API shows it."""

    user: str
    bot: str
    invocation_id: str
    is_start_of_session: bool
    tone: str | None
    options_sets: list[str]
    previous_messages: list[dict[str, Any]] | None

    def as_json(self) -> dict[str, Any]:
        """The camelCase view documented for `GET /_sim/conversations/<id>`."""
        return {
            "user": self.user,
            "bot": self.bot,
            "invocationId": self.invocation_id,
            "isStartOfSession": self.is_start_of_session,
            "tone": self.tone,
            "optionsSets": self.options_sets,
            "previousMessages": self.previous_messages,
        }


@dataclasses.dataclass
class Conversation:
    """A server-side conversation created by `/turing/conversation/create`."""

    id: str
    client_id: str
    signature: str
    encrypted_signature: str
    created: float
    signed_in: bool
    turns: list[Turn] = dataclasses.field(default_factory=list)
    context: list[str] = dataclasses.field(default_factory=list)
    disengaged: bool = False

    def as_json(self, expiry_seconds: float) -> dict[str, Any]:
        """The control-API view (signatures left out: they are credentials)."""
        return {
            "id": self.id,
            "clientId": self.client_id,
            "created": self.created,
            "expires": self.created + expiry_seconds,
            "signedIn": self.signed_in,
            "disengaged": self.disengaged,
            "turns": [turn.as_json() for turn in self.turns],
            "context": list(self.context),
        }


@dataclasses.dataclass
class Stats:
    """Counters the tests assert on; violations are human-readable protocol complaints."""

    creates: int = 0
    sockets: int = 0
    open_sockets: int = 0
    invocations: int = 0
    violations: list[str] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The `GET /_sim/stats` body."""
        return dataclasses.asdict(self)


class SimulatorState:
    """All conversations, counters and settings of one simulator process."""

    def __init__(self, defaults: SimConfig, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._defaults = dataclasses.replace(defaults)
        self._wall_clock = wall_clock
        self.config = dataclasses.replace(defaults)
        self.conversations: dict[str, Conversation] = {}
        self.stats = Stats()
        self.last_invocation: dict[str, Any] | None = None

    def now(self) -> float:
        """The simulator's clock: wall time plus the configured offset."""
        return self._wall_clock() + self.config.clock_offset

    def reset(self) -> None:
        """Forget every conversation and counter and restore the CLI defaults."""
        self.config = dataclasses.replace(self._defaults)
        self.conversations.clear()
        open_sockets = self.stats.open_sockets
        self.stats = Stats(open_sockets=open_sockets)
        self.last_invocation = None

    def violation(self, text: str) -> None:
        """Record a protocol violation by a client."""
        self.stats.violations.append(text)

    def create_conversation(self, *, signed_in: bool) -> Conversation:
        """A new conversation with Bing-shaped ids and fresh signatures."""
        tenant = "BingProd" if signed_in else "BingProdUnAuthenticatedUsers"
        conversation = Conversation(
            id=f"51D|{tenant}|{secrets.token_hex(32).upper()}",
            client_id=str(secrets.randbelow(9 * 10**15) + 10**15),
            signature=base64.b64encode(secrets.token_bytes(33)).decode(),
            encrypted_signature=_encrypted_signature(),
            created=self.now(),
            signed_in=signed_in,
        )
        self.conversations[conversation.id] = conversation
        self.stats.creates += 1
        return conversation

    def expired(self, conversation: Conversation) -> bool:
        """Whether the conversation's lifetime has passed on the simulator clock."""
        return conversation.created + self.config.expiry_seconds < self.now()


def _encrypted_signature() -> str:
    """A long base64 token that always contains `+`, `/` and `=`.

    Real ones do often enough that a client which forgets to URL-encode
    `sec_access_token` breaks; we make it break every time.
    """
    head = base64.b64encode(secrets.token_bytes(48)).decode()
    tail = base64.b64encode(secrets.token_bytes(47)).decode()  # 47 bytes -> ends with one "="
    return f"{head}+/{tail}"
