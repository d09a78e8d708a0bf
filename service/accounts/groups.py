"""Account groups: which API keys may share an upstream account.

Copilot keeps long-term memory and personalization per account: a fact one conversation
of an account tells it can resurface in another conversation of the same account. Keys
whose users must not see each other's facts must therefore never share an account. A
group is that boundary:

- every account belongs to one group (`default` unless the operator says otherwise);
- every key belongs to one group: a static key through `API_KEYS` (`sk-…@team-a`), a
  managed key through `/admin/keys` (`"group": "team-a"`); unnamed = `default`;
- a key's turns run only on its group's accounts, failover included; a group with no
  account that can take turns is a 503 naming the group (never another group's account).

Group names are operator-chosen labels, `[a-z0-9][a-z0-9_-]{0,31}`, so they are safe in
Redis keys, logs and metric labels (their number is bounded by the configuration).
See docs/accounts-groups.md for what sharing an account means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

from service.errors import InvalidRequest, UpstreamUnavailable

DEFAULT_GROUP = "default"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
GROUP_SEPARATOR = "@"

T = TypeVar("T")


def valid(name: str) -> bool:
    """Whether `name` is a well-formed group name."""
    return bool(_NAME.fullmatch(name))


def parse(value: Any, param: str = "group") -> str:
    """A group name from an admin request (`InvalidRequest` naming `param` if malformed)."""
    if value is None:
        return DEFAULT_GROUP
    if not isinstance(value, str) or not valid(value.strip()):
        raise InvalidRequest(
            f"`{param}` must be a group name: 1-32 lowercase letters, digits, '-' or '_' "
            "(starting with a letter or digit), or null for `default`.",
            param=param,
        )
    return value.strip()


def split_static_key(entry: str) -> tuple[str, str]:
    """`sk-…@team-a` → (`sk-…`, `team-a`); an entry without a valid `@group` suffix is all key."""
    key, separator, group = entry.rpartition(GROUP_SEPARATOR)
    if separator and key and valid(group):
        return key, group
    return entry, DEFAULT_GROUP


def members(items: Iterable[T], group: str) -> list[T]:
    """The items (accounts) whose `.group` is `group`."""
    return [item for item in items if getattr(item, "group", DEFAULT_GROUP) == group]


def empty_group(group: str) -> UpstreamUnavailable:
    """The 503 for a turn whose key's group has no account at all."""
    return UpstreamUnavailable(
        f"No upstream account is in the account group '{group}' that this API key belongs to, and "
        "a key's turns never run on another group's accounts; the operator must add one "
        f'(POST /admin/accounts with "group": "{group}", or `python -m service.admin add '
        f"--group {group}`) or move one there."
    )
