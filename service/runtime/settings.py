"""Every setting the gateway reads, parsed strictly from one mapping.

Both tiers (the Flask web app and the RQ workers) build a `Settings` with
`load_settings(os.environ)` at their entry point; tests pass a plain dict instead
of touching `os.environ`. A bad value raises `SettingsError` naming the key, so a
misconfigured deploy stops at start-up with a clear message instead of failing on
the first request.

Each key is documented where it is parsed, in the `# NAME: meaning` comment above its
`_read`; docs/configuration.md is generated from those comments (`python -m
service.settings_doc --write`) and a unit test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from service.accounts.groups import split_static_key
from service.models import find_model, parse_aliases
from service.runtime.logs import redact_passwords

T = TypeVar("T")

UPSTREAMS = ("copilot", "bing")

# Where the SECRET_KEY a deploy already uses is: a new one would make stored accounts unreadable.
KEEP_SECRET_HINT = (
    "use the one this gateway already has: deploy/start keeps it in DATA_DIR/secret_key "
    "(default .data/secret_key) and deploy/admin reads it from there; elsewhere give every process "
    "the same SECRET_KEY (see docs/configuration.md)"
)


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use."""


@dataclasses.dataclass(frozen=True)
class SentinelConfig:
    """Where Redis Sentinel runs and which monitored master the gateway uses."""

    addresses: tuple[tuple[str, int], ...]
    master: str
    password: str = ""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parsed configuration; see `load_settings` for each key's meaning."""

    port: int = 8000
    redis_url: str | None = None
    api_keys: tuple[str, ...] = ()
    allow_open: bool = False
    cors_allow_origins: tuple[str, ...] | None = None
    secret_key: str = dataclasses.field(default="", repr=False)
    data_dir: str = ""
    upstream: str = "copilot"
    bing_create_url: str = "https://www.bing.com/turing/conversation/create"
    bing_chathub_url: str = "wss://sydney.bing.com/sydney/ChatHub"
    copilot_url: str = "https://copilot.microsoft.com"
    copilot_access_token: str = ""
    upstream_cookies: tuple[str, ...] = ()
    upstream_transport: str = "browser"
    upstream_ca_bundle: str = ""
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
    stream_resume_grace_seconds: float = 15.0
    coalesce_ms: float = 8.0
    replay_ttl: int = 3600
    conversation_ttl: int = 7 * 24 * 3600
    upstream_handle_ttl: int = 6 * 3600
    context_max_chars: int = 32000
    max_request_bytes: int = 4 * 1024 * 1024
    max_messages: int = 2048
    max_input_chars: int = 400_000
    log_level: str = "INFO"
    log_format: str = "text"
    worker_metrics_port: int = 0
    admin_key: str = dataclasses.field(default="", repr=False)
    account_max_concurrent: int = 2
    account_rpm: int = 12
    account_probe_seconds: float = 300.0
    account_health: bool = True
    image_max_bytes: int = 10 * 1024 * 1024
    image_max_per_message: int = 4
    image_url_fetch: bool = False
    image_url_allow_private: bool = False
    image_fetch_timeout: float = 10.0
    queue_max_wait_seconds: float = 30.0
    upstream_max_turn_chars: int = 10000
    max_upstream_turns_per_request: int = 12
    model_aliases: tuple[tuple[str, str], ...] = ()
    key_default_rpm: int = 0
    key_default_concurrent: int = 0
    key_default_tokens_per_day: int = 0
    key_default_models: tuple[str, ...] = ()
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = ""
    require_auth: bool = False
    key_max_conversations: int = 1000
    key_slot_lease_seconds: float = 15.0
    # (static key, group) for the API_KEYS entries that name a group (`sk-…@team-a`).
    api_key_groups: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)
    redis_maxmemory: str = "256mb"
    trace_requests: bool = False
    upstream_spare_conversations: bool = True
    upstream_keep_sockets: bool = True
    upstream_socket_idle_seconds: float = 120.0

    @property
    def sentinel(self) -> SentinelConfig | None:
        """The Sentinel deployment to discover the Redis primary through; None = plain `REDIS_URL`."""
        if not self.redis_sentinels:
            return None
        return SentinelConfig(self.redis_sentinels, self.redis_sentinel_master, self.redis_sentinel_password)

    @property
    def redis_configured(self) -> bool:
        """Whether an external Redis is configured (a URL or Sentinels); else the launcher embeds one."""
        return self.redis_url is not None or bool(self.redis_sentinels)

    tool_emulation: bool = True
    playground: bool = True

    @property
    def auth_enabled(self) -> bool:
        """Auth is on when a static API key is configured, or ADMIN_KEY (managed keys) is set."""
        return bool(self.api_keys or self.admin_key)

    @property
    def listen_host(self) -> str:
        """Where the web tier binds: every interface only when keyed or deliberately open.

        With no keys the gateway relays anyone to the operator's account, so unless
        `ALLOW_OPEN` says that is meant, only this machine may reach it.
        """
        return "0.0.0.0" if self.auth_enabled or self.allow_open else "127.0.0.1"

    @property
    def cors_origins(self) -> tuple[str, ...]:
        """Origins browsers may call from: as configured, else `*` when keyed and none when open.

        An open gateway on a laptop must not be drivable by any web page the operator visits.
        """
        if self.cors_allow_origins is not None:
            return self.cors_allow_origins
        return ("*",) if self.auth_enabled else ()


def _text(value: str) -> str:
    return value.strip()


def _positive_int(value: str) -> int:
    number = int(value.strip())
    if number <= 0:
        raise ValueError("must be a positive whole number")
    return number


def _count(value: str) -> int:
    number = int(value.strip())
    if number < 0:
        raise ValueError("must be a whole number, 0 or more (0 = no limit)")
    return number


def _port(value: str) -> int:
    number = _positive_int(value)
    if number > 65535:
        raise ValueError("must be a TCP port (1-65535)")
    return number


def _port_or_off(value: str) -> int:
    return 0 if value.strip() == "0" else _port(value)


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


def _secret(value: str) -> str:
    secret = value.strip()
    if len(secret) < 16:
        raise ValueError(
            "must be at least 16 characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return secret


# Values shipped in examples and manifests, public by definition: never accepted as a secret.
PLACEHOLDER_SECRETS = (
    "sk-change-me",
    "change-me-to-32-random-bytes",
    "change-me-admin-key",
    "changeme",
    "change-me",
    "replace-me",
    "your-api-key",
    "your-secret-key",
    "sk-xxxxxxxx",
)


def _placeholder(value: str) -> bool:
    folded = value.strip().lower()
    return any(word in folded for word in PLACEHOLDER_SECRETS) or folded.replace("x", "") in ("", "sk-")


def _refuse_placeholders(environ: Mapping[str, str]) -> None:
    """A credential left at an example value is public: refuse to start with one."""
    for key in ("API_KEYS", "SECRET_KEY", "ADMIN_KEY"):
        raw = environ.get(key) or ""
        values = raw.split(",") if key == "API_KEYS" else [raw]
        if any(value.strip() and _placeholder(value) for value in values):
            raise SettingsError(
                f"{key} holds a placeholder value from an example or manifest (e.g. 'change-me'), "
                "which anyone can read: set a real one "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )


def _memory(value: str) -> str:
    amount = value.strip().lower()
    if not re.fullmatch(r"[1-9][0-9]*(?:b|kb|mb|gb)?", amount):
        raise ValueError("must be a size such as 256mb or 1gb")
    return amount


def _flag(value: str) -> bool:
    flag = value.strip().lower()
    if flag not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
        raise ValueError("must be on or off")
    return flag in ("1", "true", "on", "yes")


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
    try:
        urlsplit(url).port  # noqa: B018 - parsed for its ValueError on a bad port
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    return url


def _host_ports(value: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port` (IPv6 hosts in brackets: `[::1]:26379`)."""
    addresses = []
    for item in _csv(value):
        host, sep, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{item!r} is not host:port (port 1-65535)")
        addresses.append((host, int(port)))
    return tuple(addresses)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _lines(value: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in value.replace("\r", "").split("\n") if line.strip())


def _pem_file(value: str) -> str:
    path = value.strip()
    if not path:
        return ""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            pem = handle.read(1 << 20)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"{path} holds no PEM certificate")
    return path


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


# Keys whose values are credentials: an error names the key but never shows the value.
SECRET_KEYS = (
    "API_KEYS",
    "SECRET_KEY",
    "ADMIN_KEY",
    "COPILOT_ACCESS_TOKEN",
    "UPSTREAM_COOKIES",
    "REDIS_SENTINEL_PASSWORD",
)


def _shown(key: str, raw: str) -> str:
    if key in SECRET_KEYS:
        return f"{key} (value not shown)"
    return f"{key}={redact_passwords(raw.strip())!r}"


def _read(environ: Mapping[str, str], key: str, parse: Callable[[str], T], default: T) -> T:
    raw = environ.get(key)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        # No `from exc`: the parser's own message may quote the raw value (a password).
        raise SettingsError(f"{_shown(key, raw)} is invalid: {exc}") from None


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from an environment-like mapping, failing loudly on bad values."""
    d = Settings()
    settings = Settings(
        # PORT: TCP port the web server listens on.
        port=_read(environ, "PORT", _port, d.port),
        # REDIS_URL: Redis for jobs, pub/sub and conversations; unset = `deploy/start` runs a private,
        # password-protected, persistent redis-server on loopback (and `deploy/admin` finds it).
        # With REDIS_SENTINELS only its password, username, db and scheme (rediss = TLS) are used.
        redis_url=_read(environ, "REDIS_URL", _redis_url, d.redis_url),
        # API_KEYS: comma-separated bearer keys clients must send (`Authorization: Bearer …` or
        # `api-key: …`); empty (and no ADMIN_KEY) = open, any key accepted, and the web tier
        # listens on 127.0.0.1 only. With keys, managed keys (docs/operating.md) are accepted too.
        # `key@group` puts a key's turns on that account group's accounts only (default: `default`).
        api_keys=tuple(split_static_key(entry)[0] for entry in _read(environ, "API_KEYS", _csv, d.api_keys)),
        api_key_groups=tuple(
            pair
            for entry in _read(environ, "API_KEYS", _csv, d.api_keys)
            if (pair := split_static_key(entry))[0] != entry
        ),
        # ALLOW_OPEN: 1 = serve without API_KEYS on every interface (an open relay of the account,
        # on purpose).
        allow_open=_read(environ, "ALLOW_OPEN", _flag, d.allow_open),
        # CORS_ALLOW_ORIGINS: comma-separated origins browsers may call from (or *); unset = * when keyed,
        # none when open.
        cors_allow_origins=_read(environ, "CORS_ALLOW_ORIGINS", _csv, d.cors_allow_origins),
        # SECRET_KEY: server secret (16+ characters): keys the HMAC owner tags of API keys and seals
        # account cookies and tokens in Redis. Required with API_KEYS, UPSTREAM_COOKIES,
        # COPILOT_ACCESS_TOKEN or ADMIN_KEY; `deploy/start` generates one in DATA_DIR and keeps it.
        # Changing it orphans existing conversations and makes stored accounts unreadable.
        secret_key=_read(environ, "SECRET_KEY", _secret, d.secret_key),
        # DATA_DIR: where `deploy/start` keeps Redis data, its password, the generated SECRET_KEY and
        # redis.json (how `deploy/admin` finds that Redis); unset = .data/ of the project.
        data_dir=_read(environ, "DATA_DIR", _text, d.data_dir),
        # UPSTREAM: which upstream dialect the workers speak: `copilot` (/c/api/chat, 2024–) or `bing`
        # (ChatHub, 2023–2024).
        upstream=_read(environ, "UPSTREAM", _choice(*UPSTREAMS), d.upstream),
        # BING_CREATE_URL: ChatHub conversation-create endpoint (HTTP GET).
        bing_create_url=_read(environ, "BING_CREATE_URL", _url("http", "https"), d.bing_create_url),
        # BING_CHATHUB_URL: ChatHub websocket endpoint.
        bing_chathub_url=_read(environ, "BING_CHATHUB_URL", _url("ws", "wss"), d.bing_chathub_url),
        # COPILOT_URL: Copilot's base URL; REST calls go here, the websocket to /c/api/chat on it.
        copilot_url=_read(environ, "COPILOT_URL", _url("http", "https"), d.copilot_url).rstrip("/"),
        # COPILOT_ACCESS_TOKEN: optional signed-in MSAL access token (sent as accessToken on the socket).
        copilot_access_token=_read(environ, "COPILOT_ACCESS_TOKEN", _text, d.copilot_access_token),
        # UPSTREAM_COOKIES: the accounts' Cookie header strings, one per line, seeding the account pool
        # as env-1, env-2, … (docs/accounts.md); empty = one anonymous account. Never logged.
        upstream_cookies=_read(environ, "UPSTREAM_COOKIES", _lines, d.upstream_cookies),
        # UPSTREAM_TRANSPORT: "browser" (curl_cffi: each account's browser TLS fingerprint, headers and
        # proxy) or "plain" (requests + websocket-client, for upstreams that need no impersonation).
        upstream_transport=_read(
            environ, "UPSTREAM_TRANSPORT", _choice("browser", "plain"), d.upstream_transport
        ),
        # UPSTREAM_CA_BUNDLE: PEM file of extra CAs the upstream transport trusts (never disables checks).
        upstream_ca_bundle=_read(environ, "UPSTREAM_CA_BUNDLE", _pem_file, d.upstream_ca_bundle),
        # RQ_QUEUE: name of the RQ queue turns are enqueued on.
        queue_name=_read(environ, "RQ_QUEUE", _text, d.queue_name) or d.queue_name,
        # WORKER_CONCURRENCY: turns one worker process runs at once (gevent greenlets).
        worker_concurrency=_read(environ, "WORKER_CONCURRENCY", _positive_int, d.worker_concurrency),
        # JOB_TIMEOUT: seconds a turn may run (waiting for an account included) before the worker kills
        # it (504).
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
        # STREAM_RESUME_GRACE_SECONDS: how long a stream with `store: true` or an Idempotency-Key
        # keeps its turn running after the client disconnects, for it to resume (0: cancel at once).
        stream_resume_grace_seconds=_read(
            environ, "STREAM_RESUME_GRACE_SECONDS", _non_negative_float, d.stream_resume_grace_seconds
        ),
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
        # MAX_REQUEST_BYTES: largest request body accepted (413 above it), chunked bodies included.
        max_request_bytes=_read(environ, "MAX_REQUEST_BYTES", _positive_int, d.max_request_bytes),
        # MAX_MESSAGES: most messages one request may carry (400 naming `messages` above it).
        max_messages=_read(environ, "MAX_MESSAGES", _positive_int, d.max_messages),
        # MAX_INPUT_CHARS: most characters of message text one request may carry (400 above it).
        max_input_chars=_read(environ, "MAX_INPUT_CHARS", _positive_int, d.max_input_chars),
        # LOG_LEVEL: DEBUG, INFO, WARNING, ERROR or CRITICAL.
        log_level=_read(environ, "LOG_LEVEL", _log_level, d.log_level),
        # LOG_FORMAT: "text" (key=value lines) or "json" (one JSON object per line, for log pipelines).
        log_format=_read(environ, "LOG_FORMAT", _choice("text", "json"), d.log_format),
        # WORKER_METRICS_PORT: port each worker process serves Prometheus metrics on; 0 = off.
        worker_metrics_port=_read(environ, "WORKER_METRICS_PORT", _port_or_off, d.worker_metrics_port),
        # ADMIN_KEY: bearer key (16+ characters) of the /admin/ API; unset = no admin API at all (404).
        # Setting it turns auth on (managed keys are accepted even with no API_KEYS).
        admin_key=_read(environ, "ADMIN_KEY", _secret, d.admin_key),
        # ACCOUNT_MAX_CONCURRENT: turns in flight per upstream account (all workers together; overridable
        # per account). `deploy/start --demo` sets 50 unless given.
        account_max_concurrent=_read(
            environ, "ACCOUNT_MAX_CONCURRENT", _positive_int, d.account_max_concurrent
        ),
        # ACCOUNT_RPM: turns started per upstream account per sliding minute (all workers together;
        # overridable per account). `deploy/start --demo` sets 10000 unless given.
        account_rpm=_read(environ, "ACCOUNT_RPM", _positive_int, d.account_rpm),
        # ACCOUNT_PROBE_SECONDS: how often one worker probes accounts that need attention or are
        # unreachable (a cheap REST call, never a chat turn).
        account_probe_seconds=_read(
            environ, "ACCOUNT_PROBE_SECONDS", _positive_float, d.account_probe_seconds
        ),
        # ACCOUNT_HEALTH: on = account errors cool or park the account; off = pass them through
        # (one-off injected faults in tests must not park the only account).
        account_health=_read(environ, "ACCOUNT_HEALTH", _flag, d.account_health),
        # QUEUE_MAX_WAIT_SECONDS: expected wait for an account slot above which a request gets 429 at once.
        queue_max_wait_seconds=_read(
            environ, "QUEUE_MAX_WAIT_SECONDS", _positive_float, d.queue_max_wait_seconds
        ),
        # UPSTREAM_MAX_TURN_CHARS: most text one upstream turn carries; more is primed over several turns.
        upstream_max_turn_chars=_read(
            environ, "UPSTREAM_MAX_TURN_CHARS", _positive_int, d.upstream_max_turn_chars
        ),
        # MAX_UPSTREAM_TURNS_PER_REQUEST: most upstream turns one request may cause (priming parts, the
        # turn, one repair); a request needing more is a 400 context_length_exceeded before it is enqueued.
        max_upstream_turns_per_request=_read(
            environ, "MAX_UPSTREAM_TURNS_PER_REQUEST", _positive_int, d.max_upstream_turns_per_request
        ),
        # MODEL_ALIASES: `glob=model,…` (e.g. `claude-*=copilot,o3=think-deeper`) mapping client model names
        # onto catalog models, before the built-in defaults (docs/api.md#models).
        model_aliases=_read(environ, "MODEL_ALIASES", parse_aliases, d.model_aliases),
        # KEY_DEFAULT_RPM: turns per sliding minute per key, for static keys and managed keys without
        # their own; 0 = no limit.
        key_default_rpm=_read(environ, "KEY_DEFAULT_RPM", _count, d.key_default_rpm),
        # KEY_DEFAULT_CONCURRENT: turns in flight at once per key (all web processes together); 0 = no limit.
        key_default_concurrent=_read(environ, "KEY_DEFAULT_CONCURRENT", _count, d.key_default_concurrent),
        # KEY_DEFAULT_TOKENS_PER_DAY: input+output tokens per key per UTC day; 0 = no limit.
        key_default_tokens_per_day=_read(
            environ, "KEY_DEFAULT_TOKENS_PER_DAY", _count, d.key_default_tokens_per_day
        ),
        # KEY_DEFAULT_MODELS: comma-separated model names or globs a key may use; empty = all.
        key_default_models=_read(environ, "KEY_DEFAULT_MODELS", _csv, d.key_default_models),
        # REDIS_SENTINELS: comma-separated host:port of Redis Sentinels; set = find the primary through them.
        redis_sentinels=_read(environ, "REDIS_SENTINELS", _host_ports, d.redis_sentinels),
        # REDIS_SENTINEL_MASTER: the master name the Sentinels monitor (required with REDIS_SENTINELS).
        redis_sentinel_master=_read(environ, "REDIS_SENTINEL_MASTER", _text, d.redis_sentinel_master),
        # REDIS_SENTINEL_PASSWORD: password of the Sentinels themselves (Redis's own is in REDIS_URL).
        redis_sentinel_password=_read(environ, "REDIS_SENTINEL_PASSWORD", _text, d.redis_sentinel_password),
        # IMAGE_MAX_BYTES: largest image input accepted (decoded bytes; 400 naming the part above it).
        image_max_bytes=_read(environ, "IMAGE_MAX_BYTES", _positive_int, d.image_max_bytes),
        # IMAGE_MAX_PER_MESSAGE: most image parts one message may carry (400 naming the part above it).
        image_max_per_message=_read(environ, "IMAGE_MAX_PER_MESSAGE", _positive_int, d.image_max_per_message),
        # IMAGE_URL_FETCH: on = http(s) image URLs are fetched by the worker (SSRF-checked); off = 400.
        image_url_fetch=_read(environ, "IMAGE_URL_FETCH", _flag, d.image_url_fetch),
        # IMAGE_URL_ALLOW_PRIVATE: UNSAFE, tests only: let image fetches reach loopback/private addresses.
        image_url_allow_private=_read(environ, "IMAGE_URL_ALLOW_PRIVATE", _flag, d.image_url_allow_private),
        # IMAGE_FETCH_TIMEOUT: seconds an image URL fetch may take in all (every redirect hop included).
        image_fetch_timeout=_read(environ, "IMAGE_FETCH_TIMEOUT", _positive_float, d.image_fetch_timeout),
        # TOOL_EMULATION: on = `tools` are emulated by prompting (docs/tools-and-images.md); off = a
        # request that lets the model call tools gets a 400 naming `tools` (never silently ignored).
        tool_emulation=_read(environ, "TOOL_EMULATION", _choice("on", "off"), "on") == "on",
        # REQUIRE_AUTH: 1 = refuse to start without API_KEYS or ADMIN_KEY (the k8s manifests set it).
        require_auth=_read(environ, "REQUIRE_AUTH", _flag, d.require_auth),
        # KEY_MAX_CONVERSATIONS: conversations one key may keep stored at once (429 above); 0 = no limit.
        key_max_conversations=_read(environ, "KEY_MAX_CONVERSATIONS", _count, d.key_max_conversations),
        # REDIS_MAXMEMORY: memory limit of the embedded redis-server (deploy/start without REDIS_URL).
        redis_maxmemory=_read(environ, "REDIS_MAXMEMORY", _memory, d.redis_maxmemory),
        # KEY_SLOT_LEASE_SECONDS: a key's turn slot is renewed this often ×3 while its response is
        # open; a web process that dies frees its slots within about twice this.
        key_slot_lease_seconds=_read(
            environ, "KEY_SLOT_LEASE_SECONDS", _positive_float, d.key_slot_lease_seconds
        ),
        # PLAYGROUND: on = the chat playground page at `/` (docs/console.md); off = `/` is a 404.
        playground=_read(environ, "PLAYGROUND", _choice("on", "off"), "on") == "on",
        # TRACE_REQUESTS: 1 = a turn sent with `X-Gateway-Trace: 1` keeps its per-phase trace
        # (service.runtime.trace) for ten minutes; the benchmark's --trace sets it.
        trace_requests=_read(environ, "TRACE_REQUESTS", _flag, d.trace_requests),
        # UPSTREAM_SPARE_CONVERSATIONS: 1 = keep one upstream conversation created ahead of need per
        # account, so a new conversation's first turn pays no create (workers/spare_conversations.py).
        # On by default for Copilot (no documented conversation expiry, creates are not turns); off
        # by default for ChatHub (UPSTREAM=bing), whose conversations open their own sockets anyway.
        upstream_spare_conversations=_read(
            environ, "UPSTREAM_SPARE_CONVERSATIONS", _flag, d.upstream_spare_conversations
        ),
        # UPSTREAM_KEEP_SOCKETS: on = a Copilot account's websocket stays open between turns, one idle
        # socket per account per worker process, as a browser tab keeps one (workers/upstream/socket_park.py);
        # off = a socket per turn.
        upstream_keep_sockets=_read(environ, "UPSTREAM_KEEP_SOCKETS", _flag, d.upstream_keep_sockets),
        # UPSTREAM_SOCKET_IDLE_SECONDS: an idle upstream socket kept longer than this is closed.
        upstream_socket_idle_seconds=_read(
            environ, "UPSTREAM_SOCKET_IDLE_SECONDS", _positive_float, d.upstream_socket_idle_seconds
        ),
    )
    if settings.upstream == "bing" and "UPSTREAM_SPARE_CONVERSATIONS" not in environ:
        settings = dataclasses.replace(settings, upstream_spare_conversations=False)
    _refuse_placeholders(environ)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    """Refuse combinations of settings that cannot work together, naming the keys to change."""
    if settings.require_auth and not settings.auth_enabled:
        raise SettingsError(
            "REQUIRE_AUTH is set but neither API_KEYS nor ADMIN_KEY is: put the keys clients will "
            "send in API_KEYS (and a SECRET_KEY), e.g. in the copilot-gateway Secret"
        )
    for pattern, target in settings.model_aliases:
        if find_model(target, settings.upstream) is None:
            raise SettingsError(
                f"MODEL_ALIASES maps {pattern!r} to {target!r}, "
                f"which UPSTREAM={settings.upstream} does not have"
            )
    if settings.redis_sentinels and not settings.redis_sentinel_master:
        raise SettingsError("REDIS_SENTINEL_MASTER is required with REDIS_SENTINELS (the monitored name)")
    if settings.redis_sentinel_master and not settings.redis_sentinels:
        raise SettingsError("REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not (where are they?)")
    if settings.redis_sentinels and settings.redis_url and settings.redis_url.startswith("unix://"):
        raise SettingsError("REDIS_URL must be redis:// or rediss:// with REDIS_SENTINELS (for db, password)")
    if settings.stream_hold_seconds > settings.sse_heartbeat_seconds:
        raise SettingsError("STREAM_HOLD_SECONDS must not exceed SSE_HEARTBEAT_SECONDS")
    if settings.api_keys and not settings.secret_key:
        raise SettingsError(
            "SECRET_KEY is required when API_KEYS is set: it keys the HMAC that tags each API key's "
            f"conversations; {KEEP_SECRET_HINT}"
        )
    if (
        settings.upstream_cookies or settings.copilot_access_token or settings.admin_key
    ) and not settings.secret_key:
        raise SettingsError(
            "SECRET_KEY is required when UPSTREAM_COOKIES, COPILOT_ACCESS_TOKEN or ADMIN_KEY is set: account "
            f"secrets are encrypted with it in Redis; {KEEP_SECRET_HINT}"
        )
