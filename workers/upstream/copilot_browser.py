"""What makes one account's requests look like one browser: its cookies, identity and session id.

The cookie jar travels as text (the `Cookie` header the operator pasted, persisted
encrypted after every change), so `parse_cookie_header` and `cookie_header` convert
between that text and an ordered map, and `parse_set_cookie` reads just enough of a
`Set-Cookie` line to update the jar or delete from it, and `identity_for` derives the
browser identity (impersonation profile) from a bare User-Agent.
`workers.upstream.copilot_session.AccountSession` holds the jar built from these. (The
socket's `clientSessionId` is not kept here: it is new per socket, B1.2, so
`CopilotClient.stream_turn` draws it.)
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping

from service.accounts.identity import Identity, choose_profile

ANON_COOKIE = "__Host-copilot-anon"
SIGNED_IN_COOKIE = "_U"


def parse_cookie_header(header: str) -> dict[str, str]:
    """`a=1; b=2` as an ordered name → value map (lenient: pieces without `=` are dropped)."""
    jar: dict[str, str] = {}
    for piece in header.split(";"):
        name, sep, value = piece.strip().partition("=")
        if sep and name.strip():
            jar[name.strip()] = value.strip()
    return jar


def cookie_header(jar: Mapping[str, str]) -> str:
    """The `Cookie` header for `jar`."""
    return "; ".join(f"{name}={value}" for name, value in jar.items())


def parse_set_cookie(line: str, *, now: float) -> tuple[str, str | None] | None:
    """One `Set-Cookie` line as (name, value), value None when it deletes the cookie; None if unusable.

    Only what a jar needs is read: the pair, and `Max-Age`/`Expires` for deletion
    (RFC 6265: `Max-Age` wins; zero or negative, or a past date, removes the cookie).
    Domain and path are not checked: the jar belongs to one upstream host.
    """
    pair, *attributes = line.split(";")
    name, sep, value = pair.strip().partition("=")
    if not sep or not name.strip():
        return None
    expired: bool | None = None
    for attribute in attributes:
        key, _, raw = attribute.strip().partition("=")
        key = key.strip().lower()
        if key == "max-age":
            try:
                expired = int(raw.strip()) <= 0
            except ValueError:
                continue
            break  # Max-Age takes precedence over Expires
        if key == "expires" and expired is None:
            try:
                expired = email.utils.parsedate_to_datetime(raw.strip()).timestamp() <= now
            except (TypeError, ValueError, IndexError):
                continue  # an unreadable date: treat the cookie as a session cookie
    return name.strip(), None if expired else value.strip().strip('"')


def identity_for(user_agent: str) -> Identity:
    """An identity from a bare User-Agent (clients built without a transport: tests, tools)."""
    return Identity(user_agent=user_agent, impersonate=choose_profile(user_agent)[0])

