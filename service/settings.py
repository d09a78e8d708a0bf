"""Every setting the gateway reads, parsed strictly from one mapping.

Both tiers (the Flask web app and the RQ workers) build a `Settings` with
`load_settings(os.environ)` at their entry point; tests pass a plain dict instead
of touching `os.environ`. A bad value raises `SettingsError` naming the key, so a
misconfigured deploy stops at start-up with a clear message instead of failing on
the first request.

Each key is documented where it is parsed, and in the README's table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TypeVar

from service.models import find_model, parse_aliases

T = TypeVar("T")

UPSTREAMS = ("copilot", "bing")


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parsed configuration; see `load_settings` for each key's meaning."""

    port: int = 8000
    redis_url: str | None = None
    api_keys: tuple[str, ...] = ()
    upstream: str = "copilot"
    bing_create_url: str = "https://www.bing.com/turing/conversation/create"
    bing_chathub_url: str = "wss://sydney.bing.com/sydney/ChatHub"
    copilot_url: str = "https://copilot.microsoft.com"
    copilot_access_token: str = ""
    upstream_cookies: tuple[str, ...] = ()
    queue_name: str = "chat"
    worker_concurrency: int = 100
    job_timeout: int = 300
    upstream_connect_timeout: float = 10.0
    upstream_first_token_timeout: float = 60.0
    upstream_idle_timeout: float = 30.0
    queue_wait_timeout: float = 30.0
    worker_lease_seconds: int = 6
    sse_heartbeat_seconds: float = 10.0
    stream_hold_seconds: float = 3.0
    coalesce_ms: float = 8.0
    replay_ttl: int = 3600
    conversation_ttl: int = 7 * 24 * 3600
    upstream_handle_ttl: int = 6 * 3600
    context_max_chars: int = 32000
    upstream_max_turn_chars: int = 10000
    log_level: str = "INFO"
    model_aliases: tuple[tuple[str, str], ...] = ()
    tool_emulation: bool = True

    @property
    def auth_enabled(self) -> bool:
        """Auth is on when at least one API key is configured."""
        return bool(self.api_keys)


def _text(value: str) -> str:
    return value.strip()


def _positive_int(value: str) -> int:
    number = int(value.strip())
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _port(value: str) -> int:
    number = _positive_int(value)
    if number > 65535:
        raise ValueError("must be a TCP port (1-65535)")
    return number


def _positive_float(value: str) -> float:
    number = float(value.strip())
    if not number > 0:
        raise ValueError("must be a positive number")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value.strip())
    if number < 0:
        raise ValueError("must be zero or more")
    return number


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        url = value.strip()
        if not any(url.startswith(f"{scheme}://") for scheme in schemes):
            raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
        return url

    return parse


def _redis_url(value: str) -> str | None:
    url = value.strip()
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return url


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _lines(value: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in value.replace("\r", "").split("\n") if line.strip())


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        choice = value.strip().lower()
        if choice not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return choice

    return parse


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _read(environ: Mapping[str, str], key: str, parse: Callable[[str], T], default: T) -> T:
    raw = environ.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{key}={raw!r} is invalid: {exc}") from exc


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from an environment-like mapping, failing loudly on bad values."""
    d = Settings()
    settings = Settings(
        # PORT: TCP port the web server listens on.
        port=_read(environ, "PORT", _port, d.port),
        # REDIS_URL: Redis for jobs, pub/sub and conversations; unset = embedded redis-server.
        redis_url=_read(environ, "REDIS_URL", _redis_url, d.redis_url),
        # API_KEYS: comma-separated bearer keys clients must present; empty = open gateway.
        api_keys=_read(environ, "API_KEYS", _csv, d.api_keys),
        # UPSTREAM: which upstream dialect the workers speak: "copilot" (/c/api/chat) or "bing" (ChatHub).
        upstream=_read(environ, "UPSTREAM", _choice(*UPSTREAMS), d.upstream),
        # BING_CREATE_URL: ChatHub conversation-create endpoint (HTTP GET).
        bing_create_url=_read(environ, "BING_CREATE_URL", _url("http", "https"), d.bing_create_url),
        # BING_CHATHUB_URL: ChatHub websocket endpoint.
        bing_chathub_url=_read(environ, "BING_CHATHUB_URL", _url("ws", "wss"), d.bing_chathub_url),
        # COPILOT_URL: Copilot's base URL; REST calls go here, the websocket to /c/api/chat on it.
        copilot_url=_read(environ, "COPILOT_URL", _url("http", "https"), d.copilot_url).rstrip("/"),
        # COPILOT_ACCESS_TOKEN: optional signed-in MSAL access token (sent as accessToken on the socket).
        copilot_access_token=_read(environ, "COPILOT_ACCESS_TOKEN", _text, d.copilot_access_token),
        # UPSTREAM_COOKIES: Cookie header string per Bing account, one per line; empty = anonymous.
        upstream_cookies=_read(environ, "UPSTREAM_COOKIES", _lines, d.upstream_cookies),
        # RQ_QUEUE: name of the RQ queue turns are enqueued on.
        queue_name=_read(environ, "RQ_QUEUE", _text, d.queue_name) or d.queue_name,
        # WORKER_CONCURRENCY: turns one worker process runs at once (gevent greenlets).
        worker_concurrency=_read(environ, "WORKER_CONCURRENCY", _positive_int, d.worker_concurrency),
        # JOB_TIMEOUT: seconds a turn may run before the worker kills it.
        job_timeout=_read(environ, "JOB_TIMEOUT", _positive_int, d.job_timeout),
        # UPSTREAM_CONNECT_TIMEOUT: seconds for the create call and the websocket handshake.
        upstream_connect_timeout=_read(
            environ, "UPSTREAM_CONNECT_TIMEOUT", _positive_float, d.upstream_connect_timeout
        ),
        # UPSTREAM_FIRST_TOKEN_TIMEOUT: seconds to wait for the upstream's first frame of an answer.
        upstream_first_token_timeout=_read(
            environ, "UPSTREAM_FIRST_TOKEN_TIMEOUT", _positive_float, d.upstream_first_token_timeout
        ),
        # UPSTREAM_IDLE_TIMEOUT: seconds of upstream silence mid-answer before the turn fails.
        upstream_idle_timeout=_read(
            environ, "UPSTREAM_IDLE_TIMEOUT", _positive_float, d.upstream_idle_timeout
        ),
        # QUEUE_WAIT_TIMEOUT: seconds a request waits for a worker to pick its turn up (then 503).
        queue_wait_timeout=_read(environ, "QUEUE_WAIT_TIMEOUT", _positive_float, d.queue_wait_timeout),
        # WORKER_LEASE_SECONDS: a running turn's liveness lease; a dead worker is noticed after it.
        worker_lease_seconds=_read(environ, "WORKER_LEASE_SECONDS", _positive_int, d.worker_lease_seconds),
        # SSE_HEARTBEAT_SECONDS: longest silence on an SSE stream before a comment heartbeat.
        sse_heartbeat_seconds=_read(
            environ, "SSE_HEARTBEAT_SECONDS", _positive_float, d.sse_heartbeat_seconds
        ),
        # STREAM_HOLD_SECONDS: how long a stream waits for the first event before committing 200.
        stream_hold_seconds=_read(environ, "STREAM_HOLD_SECONDS", _non_negative_float, d.stream_hold_seconds),
        # STREAM_COALESCE_MS: window in which text deltas after the first are merged into one message.
        coalesce_ms=_read(environ, "STREAM_COALESCE_MS", _non_negative_float, d.coalesce_ms),
        # REPLAY_TTL: seconds a completion's replay log (and its Idempotency-Key) is kept.
        replay_ttl=_read(environ, "REPLAY_TTL", _positive_int, d.replay_ttl),
        # CONVERSATION_TTL: seconds a conversation is kept after its last turn.
        conversation_ttl=_read(environ, "CONVERSATION_TTL", _positive_int, d.conversation_ttl),
        # UPSTREAM_HANDLE_TTL: seconds an upstream conversation is reused (capped by its own expiry).
        upstream_handle_ttl=_read(environ, "UPSTREAM_HANDLE_TTL", _positive_int, d.upstream_handle_ttl),
        # CONTEXT_MAX_CHARS: cap on history injected into a new upstream conversation.
        context_max_chars=_read(environ, "CONTEXT_MAX_CHARS", _positive_int, d.context_max_chars),
        # UPSTREAM_MAX_TURN_CHARS: most text one upstream turn carries; more is primed over several turns.
        upstream_max_turn_chars=_read(
            environ, "UPSTREAM_MAX_TURN_CHARS", _positive_int, d.upstream_max_turn_chars
        ),
        # LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL.
        log_level=_read(environ, "LOG_LEVEL", _log_level, d.log_level),
        # MODEL_ALIASES: `glob=model,…` mapping client model names onto catalog models (before the defaults).
        model_aliases=_read(environ, "MODEL_ALIASES", parse_aliases, d.model_aliases),
        # TOOL_EMULATION: on = `tools` are emulated by prompting (README); off = a request that
        # lets the model call tools gets a 400 naming `tools` (never silently ignored).
        tool_emulation=_read(environ, "TOOL_EMULATION", _choice("on", "off"), "on") == "on",
    )
    for pattern, target in settings.model_aliases:
        if find_model(target, settings.upstream) is None:
            raise SettingsError(
                f"MODEL_ALIASES maps {pattern!r} to {target!r}, "
                f"which UPSTREAM={settings.upstream} does not have"
            )
    if settings.stream_hold_seconds > settings.sse_heartbeat_seconds:
        raise SettingsError("STREAM_HOLD_SECONDS must not exceed SSE_HEARTBEAT_SECONDS")
    return settings
