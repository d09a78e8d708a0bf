"""The simulator's memory: configuration, conversations, counters and its clock.

Everything a test may want to inspect or steer lives in one `SimulatorState`, owned by
the server process and shown through the control API; both dialects (ChatHub and
Copilot) share it, one config, one set of counters. The clock is injectable
(`clock_offset`) so ChatHub expiry can be tested without waiting six hours. The state is
only touched from the asyncio loop, so it needs no locks.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import time
from collections.abc import Callable
from typing import Any

from tests.simulator.accounts import AccountBook
from tests.simulator.challenges import Challenge
from tests.simulator.cloudflare import Gate
from tests.simulator.copilot_state import CopilotConversation, nanoid
from tests.simulator.tls_hello import TlsLog

CONFIG_KEYS = (
    "max_turns",
    "expiry_seconds",
    "clock_offset",
    "token_delay",
    "words_per_update",
    "linger",
    "copilot_strict",
    "copilot_connected_twice",
    "copilot_connected_delay",
    "copilot_unknown_conversation_code",
    "copilot_modes",
    "hashcash_difficulty",
    "hashcash_variant",
    "hashcash_seed",
    "account_max_concurrent",
    "account_rpm",
    "copilot_anon_required",
    "copilot_rotate_cookie",
    "copilot_max_text",
    "copilot_human_check_silence",
    "copilot_idle_close",
    "copilot_refuse_reused",
    "copilot_idle_ping",
    "turn_seconds",
)
"""The settings the control API may change at run time."""

NON_NEGATIVE = (
    "token_delay",
    "expiry_seconds",
    "linger",
    "copilot_connected_delay",
    "account_max_concurrent",
    "account_rpm",
    "copilot_anon_required",
    "copilot_rotate_cookie",
    "copilot_max_text",
    "copilot_human_check_silence",
    "copilot_idle_close",
    "copilot_refuse_reused",
    "copilot_idle_ping",
    "turn_seconds",
)
HASHCASH_VARIANTS = ("bits", "hex")
DIALECTS = ("chathub", "copilot")


@dataclasses.dataclass
class SimConfig:
    """Behaviour knobs; the CLI sets the defaults, `POST /_sim/config` changes them."""

    token_delay: float = 0.005
    max_turns: int = 30
    expiry_seconds: float = 21600.0
    words_per_update: int = 1
    clock_offset: float = 0.0
    turn_seconds: float = 0.0
    """Least time a turn takes, as the real service's ~3.5 s: waited before the first token
    (less the answer's own streaming time); 0 = only the token delays."""
    linger: float = 5.0
    """Seconds to wait for the client to close after a turn before closing ourselves."""
    # -- Copilot only (ChatHub's max_turns / expiry_seconds never apply to it) --
    copilot_strict: bool = True
    """2026 behaviour: `connected` first, order checked, clientSessionId required (B1.3)."""
    copilot_connected_twice: bool = False
    """Send `connected` twice (strict mode only), as some 2026 sessions did."""
    copilot_connected_delay: float = 0.02
    """Seconds before `connected`; frames arriving earlier are out of order in strict mode."""
    copilot_unknown_conversation_code: str = "invalid-event"
    """errorCode for a `send` to an unknown or foreign conversation (B7.6 leaves it open)."""
    copilot_modes: str = "chat,reasoning,smart"
    """Comma-separated modes this identity may use; others get `unsupported-mode`."""
    hashcash_difficulty: int = 8
    """Difficulty written into hashcash challenges: zero bits ("bits") or zero hex digits ("hex")."""
    hashcash_variant: str = "bits"
    """Which hashcash verifier the server uses (B3.1 (b) "bits" or (a) "hex")."""
    hashcash_seed: str = ""
    """A fixed hashcash seed (64 hex digits), so a test knows how much work a puzzle takes; "" = random."""
    copilot_anon_required: bool = True
    """Anonymous mode (no `_U`, no token) needs a `__Host-copilot-anon` this process issued (B5)."""
    copilot_max_text: int = 10240  # = copilot.TEXT_LIMIT
    """Longest user text a `send` may carry before `text-too-long` (B5a [S]); 0 = no limit."""
    copilot_human_check_silence: float = 60.0
    """Seconds a socket stays silent, then closes, after an unanswered null/cloudflare challenge (B5b)."""
    copilot_idle_close: float = 0.0
    """Seconds a Copilot socket may sit idle after a turn before the server closes it; 0 = never.
    One socket carries many turns (B2: `send` names its conversation) and the reference documents
    no idle timeout, so it is off by default; tests set it to exercise a client's reopen path."""
    copilot_refuse_reused: float = 0.0
    """A fault, off by default (0): a socket that carried a turn and then sat idle at least this
    many seconds answers its next `send` with `invalid-event` alone (not a violation) and forgets
    that send. What the real service does with a socket whose server-side state it dropped is
    [U]; `invalid-event` is its answer to any frame it will not act on (B3.1)."""
    copilot_idle_ping: float = 0.0
    """Seconds between websocket-level pings the server sends a socket idle between turns (RFC 6455
    keep-alive, as load balancers and servers do); 0 = none. A client must answer (pong) and keep it."""
    copilot_rotate_cookie: bool = False
    """Every `/c/api/*` answer sets a fresh `__cf_bm`, as Cloudflare rotates it; clients must merge it."""
    # -- per account, both dialects (see `accounts`; 0 = unlimited) --
    account_max_concurrent: int = 4
    """Chat sockets in flight per account before upgrades get HTTP 502 (B5a: about 4)."""
    account_rpm: int = 15
    """Turns per minute per account before the dialect's throttle answer (B5a: about 15)."""

    def update(self, values: dict[str, Any]) -> None:
        """Apply control-API values, coercing types; unknown keys or bad values raise ValueError."""
        for key, value in values.items():
            if key not in CONFIG_KEYS:
                raise ValueError(f"unknown config key {key!r}; allowed: {', '.join(CONFIG_KEYS)}")
            if key in ("account_max_concurrent", "account_rpm") and value in (None, ""):
                value = 0  # None means unlimited, like 0
            coerced = _coerce(type(getattr(self, key)), key, value)
            if key in ("max_turns", "words_per_update") and coerced < 1:
                raise ValueError(f"{key} must be at least 1")
            if key in NON_NEGATIVE and coerced < 0:
                raise ValueError(f"{key} must not be negative")
            if key == "hashcash_difficulty" and not 0 <= coerced <= 64:
                raise ValueError("hashcash_difficulty must be between 0 and 64")
            if key == "hashcash_variant" and coerced not in HASHCASH_VARIANTS:
                raise ValueError(f"hashcash_variant must be one of {', '.join(HASHCASH_VARIANTS)}")
            if (
                key == "hashcash_seed"
                and coerced
                and (len(coerced) != 64 or coerced.strip("0123456789abcdef"))
            ):
                raise ValueError("hashcash_seed must be 64 lower-case hex digits, or empty")
            if key in ("copilot_unknown_conversation_code", "copilot_modes") and not coerced.strip(", "):
                raise ValueError(f"{key} must not be empty")
            setattr(self, key, coerced)

    def modes(self) -> frozenset[str]:
        """The Copilot modes currently allowed."""
        return frozenset(mode.strip() for mode in self.copilot_modes.split(",") if mode.strip())

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
            "dialect": "chathub",
            "clientId": self.client_id,
            "created": self.created,
            "expires": self.created + expiry_seconds,
            "signedIn": self.signed_in,
            "disengaged": self.disengaged,
            "turns": [turn.as_json() for turn in self.turns],
            "context": list(self.context),
        }


@dataclasses.dataclass
class DialectStats:
    """One dialect's share of the counters."""

    creates: int = 0
    sockets: int = 0
    """Websocket upgrades accepted."""
    open_sockets: int = 0
    idle_sockets: int = 0
    """Open Copilot sockets whose turn is over and that wait for the next (a client keeps them)."""
    invocations: int = 0
    """ChatHub `chat` invocations, or Copilot `send` events."""
    turn_seconds: float = 0.0
    """Time completed turns took, from the invocation to the answer's end (benchmarks subtract it)."""


@dataclasses.dataclass
class Stats:
    """Counters the tests assert on; violations are human-readable protocol complaints.

    The top-level counters add both dialects up (older tests read them); `chathub` and
    `copilot` hold each dialect's share. Change them through the methods so both move.
    """

    creates: int = 0
    sockets: int = 0
    open_sockets: int = 0
    idle_sockets: int = 0
    invocations: int = 0
    turn_seconds: float = 0.0
    rest_calls: int = 0
    """HTTP requests to the upstream's routes (everything but `/_sim/*` and websocket upgrades)."""
    violations: list[str] = dataclasses.field(default_factory=list)
    chathub: DialectStats = dataclasses.field(default_factory=DialectStats)
    copilot: DialectStats = dataclasses.field(default_factory=DialectStats)

    def as_json(self) -> dict[str, Any]:
        """The `GET /_sim/stats` body; `busy_sockets` = open sockets carrying (or about to carry) a turn."""
        body = dataclasses.asdict(self)
        for share in (body, body["chathub"], body["copilot"]):
            share["busy_sockets"] = share["open_sockets"] - share["idle_sockets"]
        return body

    def dialect(self, name: str) -> DialectStats:
        """The per-dialect counters for "chathub" or "copilot"."""
        return self.copilot if name == "copilot" else self.chathub

    def created(self, dialect: str) -> None:
        """Count a conversation creation."""
        self.creates += 1
        self.dialect(dialect).creates += 1

    def opened(self, dialect: str) -> None:
        """Count a websocket that has been accepted."""
        self.sockets += 1
        self.open_sockets += 1
        self.dialect(dialect).sockets += 1
        self.dialect(dialect).open_sockets += 1

    def closed(self, dialect: str) -> None:
        """Count a websocket that has ended."""
        self.open_sockets = max(0, self.open_sockets - 1)
        share = self.dialect(dialect)
        share.open_sockets = max(0, share.open_sockets - 1)

    def idled(self, dialect: str, idle: bool) -> None:
        """Count a socket whose turn ended (`idle`) or that starts another turn (not `idle`)."""
        step = 1 if idle else -1
        self.idle_sockets = max(0, self.idle_sockets + step)
        share = self.dialect(dialect)
        share.idle_sockets = max(0, share.idle_sockets + step)

    def invoked(self, dialect: str) -> None:
        """Count a chat request (ChatHub invocation or Copilot send)."""
        self.invocations += 1
        self.dialect(dialect).invocations += 1

    def answered(self, dialect: str, seconds: float) -> None:
        """Add a completed turn's duration."""
        self.turn_seconds += seconds
        self.dialect(dialect).turn_seconds += seconds


class SimulatorState:
    """All conversations, counters and settings of one simulator process."""

    def __init__(self, defaults: SimConfig, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._defaults = dataclasses.replace(defaults)
        self._wall_clock = wall_clock
        self.config = dataclasses.replace(defaults)
        self.conversations: dict[str, Conversation] = {}
        self.copilot_conversations: dict[str, CopilotConversation] = {}
        self.stats = Stats()
        self.last_invocation: dict[str, Any] | None = None
        self.last_send: dict[str, Any] | None = None
        self.challenges: list[Challenge] = []
        self.attachments: dict[str, dict[str, Any]] = {}
        """Images uploaded through `POST /c/api/attachments`, by the URL handed out."""
        """Every Copilot challenge issued, with the client's answer and the verdict."""
        self.accounts = AccountBook(clock=self.now, limits=self._account_limits)
        self.cloudflare = Gate(clock=self.now)
        """The Cloudflare gate: settings, issued clearances, verdict counters (`cloudflare`)."""
        self.tls_log = TlsLog()
        """ClientHello summaries of TLS connections (`tls_hello`)."""
        self.anon_secret = secrets.token_bytes(16)
        """Signs the `__Host-copilot-anon` values this process issues, so they outlive `reset`."""

    def _account_limits(self) -> tuple[int, int]:
        return self.config.account_max_concurrent, self.config.account_rpm

    def now(self) -> float:
        """The simulator's clock: wall time plus the configured offset."""
        return self._wall_clock() + self.config.clock_offset

    def reset(self) -> None:
        """Forget every conversation and counter and restore the CLI defaults."""
        self.config = dataclasses.replace(self._defaults)
        self.conversations.clear()
        self.copilot_conversations.clear()
        old = self.stats
        # Sockets still open stay counted, so their eventual close balances out.
        self.stats = Stats(
            open_sockets=old.open_sockets,
            idle_sockets=old.idle_sockets,
            chathub=DialectStats(open_sockets=old.chathub.open_sockets),
            copilot=DialectStats(
                open_sockets=old.copilot.open_sockets, idle_sockets=old.copilot.idle_sockets
            ),
        )
        self.last_invocation = None
        self.last_send = None
        self.challenges.clear()
        self.attachments.clear()
        self.accounts.reset()
        self.cloudflare = Gate(clock=self.now)
        self.tls_log = TlsLog()

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
        self.stats.created("chathub")
        return conversation

    def create_copilot_conversation(self, *, owner: str, signed_in: bool) -> CopilotConversation:
        """A new Copilot conversation with a 21-character nanoid, bound to `owner`."""
        conversation = CopilotConversation(id=nanoid(), owner=owner, created=self.now(), signed_in=signed_in)
        self.copilot_conversations[conversation.id] = conversation
        self.stats.created("copilot")
        return conversation

    def expired(self, conversation: Conversation) -> bool:
        """Whether the conversation's lifetime has passed on the simulator clock."""
        return conversation.created + self.config.expiry_seconds < self.now()


def _coerce(kind: type, key: str, value: Any) -> Any:
    """A control-API value (JSON or query string) as the config field's type."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} must be a boolean")
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        return value.strip()
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key} must be a number") from exc


def _encrypted_signature() -> str:
    """A long base64 token that always contains `+`, `/` and `=`.

    Real ones do often enough that a client which forgets to URL-encode
    `sec_access_token` breaks; we make it break every time.
    """
    head = base64.b64encode(secrets.token_bytes(48)).decode()
    tail = base64.b64encode(secrets.token_bytes(47)).decode()  # 47 bytes -> ends with one "="
    return f"{head}+/{tail}"
