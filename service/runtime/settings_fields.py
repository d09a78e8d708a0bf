"""The parsed configuration: the `Settings` fields, their defaults, and what follows from them.

Kept apart from the parsing (`service.runtime.settings`, `settings_parsers`) so the shape
both tiers hold is one short read: every field with its default, and the few properties
derived from several fields (where the web tier listens, which origins CORS allows,
whether Redis comes through Sentinel). Each field's meaning is documented where it is
parsed, in `load_settings`.
"""

from __future__ import annotations

import dataclasses


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
