"""The operator's operations on the pool, shared by the admin API and the CLI.

Both validate input the same way (an `InvalidRequest` naming the field) and show the
same view of an account: its public fields (never a secret), how many turns it has in
flight and how many it started in the last minute.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from service.accounts import capacity, groups, imports
from service.accounts.account import Account
from service.accounts.registry import Registry
from service.errors import InvalidRequest

TEXT_FIELDS = ("cookies", "access_token", "label", "user_agent")
LIMIT_FIELDS = ("max_concurrent", "rpm")
FIELDS = (*TEXT_FIELDS, *LIMIT_FIELDS, "enabled", "group")
ACCEPTED = (*FIELDS, *imports.CAPTURE_FIELDS, "proxy")
MAX_TEXT = 16384


def parse_changes(data: Any, *, creating: bool) -> dict[str, Any]:
    """Validated keyword arguments for `Registry.add` / `Registry.update`."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("The body must be a JSON object.", param=None)
    changes: dict[str, Any] = {}
    for name, value in data.items():
        if name not in FIELDS:
            raise InvalidRequest(f"Unknown field `{name}`; accepted: {', '.join(ACCEPTED)}.", param=name)
        if name in TEXT_FIELDS:
            if not isinstance(value, str) or len(value) > MAX_TEXT or "\n" in value or "\r" in value:
                raise InvalidRequest(f"`{name}` must be a one-line string.", param=name)
            changes[name] = value.strip()
        elif name in LIMIT_FIELDS:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise InvalidRequest(
                    f"`{name}` must be a positive integer or null (the default).", param=name
                )
            changes[name] = value
        elif name == "group":
            changes[name] = groups.parse(value)
        elif name == "enabled":
            if not isinstance(value, bool):
                raise InvalidRequest("`enabled` must be true or false.", param=name)
            changes[name] = value
    if not creating and not changes:
        raise InvalidRequest(f"Nothing to change; send one of: {', '.join(ACCEPTED)}.", param=None)
    return changes


def parse_request(data: Any, *, creating: bool, host: str) -> tuple[dict[str, Any], list[str]]:
    """`parse_changes` plus the identity fields (`curl`, `har`, `proxy`; `imports`) and their warnings."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("The body must be a JSON object.", param=None)
    rest, identity, warnings = imports.identity_changes(data, host)
    changes = parse_changes(rest, creating=creating or bool(identity))
    changes.update(identity)
    return changes, warnings


def views(registry: Registry, accounts: list[Account], now: float | None = None) -> list[dict[str, Any]]:
    """What an operator sees of each account (no secrets)."""
    now = time.time() if now is None else now
    counts = capacity.usage(registry.redis, registry.prefix, [a.id for a in accounts], now)
    return [
        {**a.public(now), "in_flight": counts[a.id][0], "turns_last_minute": counts[a.id][1]}
        for a in accounts
    ]


def add(registry: Registry, changes: dict[str, Any]) -> Account:
    """Create an account from validated changes."""
    return registry.add(**changes)


def update(registry: Registry, account_id: str, changes: dict[str, Any]) -> Account:
    """Apply validated changes (limits: null = back to the default)."""
    return registry.update(account_id, **changes)


def upstream_host(settings: Any) -> str:
    """The upstream's host, which captures must come from (Copilot's, or Bing's for ChatHub)."""
    url = settings.bing_create_url if settings.upstream == "bing" else settings.copilot_url
    return imports.upstream_host(url)
