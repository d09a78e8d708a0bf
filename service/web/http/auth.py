"""API-key authentication, OpenAI style.

With `API_KEYS` set, every request except health checks and CORS preflights must
present one of the keys, as `Authorization: Bearer <key>` (what the SDKs send) or an
`api-key` header (what Azure-style clients send). Keys are compared in constant time
against every configured key, so response timing does not reveal a key's prefix.
With no keys configured the gateway is open and any key, or none, is accepted.

Managed keys (`service.access.keys`, created through /admin/keys or the CLI) are accepted too,
by one Redis lookup of their hash, whenever auth is on (API_KEYS or ADMIN_KEY set).

Either way the key decides the caller's *owner tag* (`owner_of`, an HMAC keyed with
`SECRET_KEY`; a managed key's id), which scopes
conversations: one key cannot read or continue another key's conversations. Keys are
never logged, and the error for an unknown key shows only its ends.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from service.access.key_limits import Limits
from service.access.keys import ManagedKey, static_key_id
from service.access.ratelimit import Caller
from service.accounts.groups import DEFAULT_GROUP
from service.errors import AuthenticationFailed
from service.state.conversations import owner_of

log = logging.getLogger(__name__)


class HeaderLookup(Protocol):
    """What the pure request code reads headers through: a plain dict (tests) or werkzeug's
    case-insensitive `request.headers`, which is no `Mapping`."""

    def get(self, key: str, /) -> str | None: ...


MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def presented_key(headers: HeaderLookup) -> str | None:
    """The key the request carries (Bearer token first, then `api-key`, then `x-api-key`), or None.

    `x-api-key` is how Anthropic clients (anthropic-python, Claude Code) send theirs.
    """
    authorization = (headers.get("Authorization") or "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = (headers.get("api-key") or headers.get("x-api-key") or "").strip()
    return api_key or None


def mask_key(key: str) -> str:
    """The key with its middle starred out (`sk-ab**********wxyz`); short keys fully."""
    hidden = len(key) - 9
    if hidden < 8:
        return "*" * len(key)
    return f"{key[:5]}{'*' * hidden}{key[-4:]}"


def is_known(key: str, keys: tuple[str, ...]) -> bool:
    """Whether `key` is one of `keys`, comparing against all of them in constant time."""
    candidate = key.encode()
    found = False
    for known in keys:
        found |= hmac.compare_digest(candidate, known.encode())
    return found


def authenticate(headers: HeaderLookup, keys: tuple[str, ...], *, secret: str) -> str:
    """The caller's owner tag; raises `AuthenticationFailed` (401) when auth is on and fails."""
    return identify(headers, keys, secret=secret, required=bool(keys)).owner


def identify(
    headers: HeaderLookup,
    keys: tuple[str, ...],
    *,
    secret: str,
    required: bool,
    managed: Callable[[str], ManagedKey | None] | None = None,
    defaults: Limits | None = None,
    groups: Mapping[str, str] | None = None,
) -> Caller:
    """Who the caller is (id, owner tag, effective limits); 401 when `required` and the key is unknown.

    A static key (`keys`) is checked first, in constant time; then `managed` looks the key
    up by its hash. Without `required` (an open gateway) anyone passes, with no limits.
    """
    key = presented_key(headers)
    if not required:
        return Caller(id="open", owner=owner_of(key or "", secret=secret), limits=Limits())
    if key is None:
        raise AuthenticationFailed(MISSING_KEY)
    if is_known(key, keys):
        owner = owner_of(key, secret=secret)
        group = (groups or {}).get(key, DEFAULT_GROUP)
        return Caller(
            id=static_key_id(owner), owner=owner, limits=Limits().over(defaults or Limits()), group=group
        )
    record = managed(key) if managed is not None else None
    if record is None:
        log.info("event=auth_rejected reason=unknown_key")
        raise AuthenticationFailed(f"Incorrect API key provided: {mask_key(key)}.")
    return Caller(
        id=record.id, owner=record.owner, limits=record.limits.over(defaults or Limits()), group=record.group
    )
