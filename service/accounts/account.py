"""One upstream account as workers and the admin API see it, and the states it can be in.

The fields mirror the account's Redis hash (`registry`); the secrets stay sealed here and
are opened only through the registry, so an `Account` can be logged or listed safely.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from service.accounts.groups import DEFAULT_GROUP
from service.accounts.identity import Identity, choose_profile, default_identity, profiles
from service.runtime.redis_conn import text

READY, COOLING, NEEDS_ATTENTION, DISABLED = "ready", "cooling", "needs_attention", "disabled"
UNREACHABLE = "unreachable"  # repeated connection failures to the upstream (service.accounts.health)
HEALTH_FIELDS = ("cooling_until", "attention", "unreachable", "error_code", "error_message", "error_at")


class AccountNotFound(KeyError):
    """No account with that id."""


@dataclasses.dataclass(frozen=True)
class Account:
    """One upstream account as a worker uses it; secrets are opened lazily and never printed."""

    id: str
    label: str = ""
    sealed_cookies: str = dataclasses.field(default="", repr=False)
    sealed_token: str = dataclasses.field(default="", repr=False)
    user_agent: str = ""
    client_hints: str = ""
    accept_language: str = ""
    impersonate: str = ""
    sealed_proxy: str = dataclasses.field(default="", repr=False)
    enabled: bool = True
    max_concurrent: int | None = None
    rpm: int | None = None
    group: str = DEFAULT_GROUP  # only keys of this group run turns on it (service.accounts.groups)
    source: str = "admin"
    created: float = 0.0
    cooling_until: float = 0.0
    attention: bool = False
    unreachable: bool = False
    error_code: str = ""
    error_message: str = ""
    error_at: float = 0.0

    def state(self, now: float) -> str:
        """ready, cooling (until `cooling_until`), needs_attention, unreachable, or disabled."""
        if not self.enabled:
            return DISABLED
        if self.attention:
            return NEEDS_ATTENTION
        if self.unreachable:
            return UNREACHABLE
        if self.cooling_until > now:
            return COOLING
        return READY

    def limits(self, max_concurrent: int, rpm: int) -> tuple[int, int]:
        """This account's (max in flight, turns per minute), falling back to the defaults."""
        return self.max_concurrent or max_concurrent, self.rpm or rpm

    def identity(self) -> Identity:
        """The browser this account speaks as (the default Chrome when none was imported)."""
        if not self.user_agent:
            return default_identity()
        # A profile a later curl_cffi dropped falls back to the nearest one it has.
        known = self.impersonate in profiles()
        stored = Identity(
            user_agent=self.user_agent,
            impersonate=self.impersonate if known else choose_profile(self.user_agent)[0],
            client_hints=Identity.hints_from_json(self.client_hints),
        )
        if self.accept_language:
            return dataclasses.replace(stored, accept_language=self.accept_language)
        return stored

    def public(self, now: float) -> dict[str, Any]:
        """What the admin API shows: everything but the secrets (a proxy only as `has_proxy`)."""
        state = self.state(now)
        return {
            "id": self.id,
            "label": self.label,
            "state": state,
            "enabled": self.enabled,
            "source": self.source,
            "has_cookies": bool(self.sealed_cookies),
            "has_access_token": bool(self.sealed_token),
            **self.identity().summary(),
            "has_proxy": bool(self.sealed_proxy),
            "max_concurrent": self.max_concurrent,
            "rpm": self.rpm,
            "group": self.group,
            "next_available_at": self.cooling_until if state == COOLING else None,
            "last_error": (
                {"code": self.error_code, "message": self.error_message, "at": self.error_at}
                if self.error_code
                else None
            ),
        }

    @classmethod
    def from_hash(cls, account_id: str, raw: Mapping[bytes | str, bytes | str]) -> Account:
        """Rebuild an account from its Redis hash."""
        data = {text(key): text(value) for key, value in raw.items()}
        return cls(
            id=account_id,
            label=data.get("label", ""),
            sealed_cookies=data.get("cookies", ""),
            sealed_token=data.get("access_token", ""),
            user_agent=data.get("user_agent", ""),
            client_hints=data.get("client_hints", ""),
            accept_language=data.get("accept_language", ""),
            impersonate=data.get("impersonate", ""),
            sealed_proxy=data.get("proxy", ""),
            enabled=data.get("enabled", "1") == "1",
            max_concurrent=int(data["max_concurrent"]) if data.get("max_concurrent") else None,
            rpm=int(data["rpm"]) if data.get("rpm") else None,
            group=data.get("group") or DEFAULT_GROUP,
            source=data.get("source", "admin"),
            created=float(data.get("created") or 0),
            cooling_until=float(data.get("cooling_until") or 0),
            attention=data.get("attention") == "1",
            unreachable=data.get("unreachable") == "1",
            error_code=data.get("error_code", ""),
            error_message=data.get("error_message", ""),
            error_at=float(data.get("error_at") or 0),
        )
