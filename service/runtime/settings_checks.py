"""Settings that parse but must not start the gateway: example credentials and bad combinations.

Each value alone is checked by its parser (`settings_parsers`); what is refused here
needs the whole picture: a credential copied from an example or manifest (public, so no
secret), or keys that cannot work together (Sentinel without its master name, API keys
without the SECRET_KEY that tags them). The message names the keys to change.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.models import find_model
from service.runtime.settings_fields import Settings, SettingsError

# Where the SECRET_KEY a deploy already uses is: a new one would make stored accounts unreadable.
KEEP_SECRET_HINT = (
    "use the one this gateway already has: deploy/start keeps it in DATA_DIR/secret_key "
    "(default .data/secret_key) and deploy/admin reads it from there; elsewhere give every process "
    "the same SECRET_KEY (see docs/configuration.md)"
)


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


def refuse_placeholders(environ: Mapping[str, str]) -> None:
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


def refuse_combinations(settings: Settings) -> None:
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
