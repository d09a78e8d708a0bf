"""What the simulator remembers about Copilot conversations, and whose they are.

Copilot conversations are server-side and persistent, addressed by a short id, and
bound to the identity that created them (B4): the same id from another identity is
refused. The identity rule is simple and documented here once:

- a `_U` cookie (signed in) → `user:<value>`;
- else a `__Host-copilot-anon` cookie (issued by `POST /c/api/start`) → `anon:<value>`;
- else `""` — a cookieless client, whose conversations any cookieless client may use.

Access tokens (`Authorization: Bearer` on REST, `accessToken=` on the websocket) only
authenticate (`revoked` → 401) and mark a caller as signed in; they do not change the
identity, because clients disagree on whether REST carries them (B1.1) and a refreshed
token must not orphan a conversation. The control API shows an identity only as its kind
plus a short fingerprint, never the cookie value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import string
from typing import Any

REVOKED = "revoked"
"""The token or `_U` value that the simulator treats as invalid/expired (HTTP 401)."""


NANOID_ALPHABET = string.ascii_letters + string.digits
"""Captured ids (`dRUXwuM545tff65JPZ3rn`, `17Wzuonj3Q54L3oYsbPdC`) are alphanumeric only."""


def nanoid(size: int = 21) -> str:
    """A fresh Copilot-shaped id: conversations, messages and image parts all use these."""
    return "".join(secrets.choice(NANOID_ALPHABET) for _ in range(size))


def identity(jar: dict[str, str]) -> str:
    """The identity a request's cookies stand for (see the module docstring)."""
    if "_U" in jar:
        return f"user:{jar['_U']}"
    if "__Host-copilot-anon" in jar:
        return f"anon:{jar['__Host-copilot-anon']}"
    return ""


def fingerprint(owner: str) -> str:
    """How the control API shows an identity: kind and a hash prefix, no credential."""
    if not owner:
        return "none"
    kind = owner.split(":", 1)[0]
    return f"{kind}:{hashlib.sha256(owner.encode()).hexdigest()[:8]}"


@dataclasses.dataclass
class CopilotTurn:
    """One completed Copilot turn, as the control API shows it."""

    user: str
    bot: str
    mode: str
    context: dict[str, Any] | None
    client_session_id: str | None
    set_options: dict[str, Any] | None
    local_consents: dict[str, Any] | None
    challenge: dict[str, Any] | None
    """The challenge this send had to clear first: method, parameter, id and the client's token."""
    features: str | None
    image: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The camelCase view documented for `GET /_sim/conversations/<id>`."""
        return {
            "user": self.user,
            "bot": self.bot,
            "mode": self.mode,
            "context": self.context,
            "clientSessionId": self.client_session_id,
            "setOptions": self.set_options,
            "reportLocalConsents": self.local_consents,
            "challenge": self.challenge,
            "features": self.features,
            "image": self.image,
        }


@dataclasses.dataclass
class CopilotConversation:
    """A conversation created by `POST /c/api/conversations` or `POST /c/api/start`."""

    id: str
    owner: str
    created: float
    signed_in: bool
    title: str | None = None
    deleted: bool = False
    turns: list[CopilotTurn] = dataclasses.field(default_factory=list)
    context: list[str] = dataclasses.field(default_factory=list)
    """Page contents (`context.edge.pageContent`) of completed turns, read by `[sim:recall]`."""

    def as_json(self) -> dict[str, Any]:
        """The control-API view (the owner shown as a fingerprint only)."""
        return {
            "id": self.id,
            "dialect": "copilot",
            "identity": fingerprint(self.owner),
            "created": self.created,
            "signedIn": self.signed_in,
            "title": self.title,
            "deleted": self.deleted,
            "turns": [turn.as_json() for turn in self.turns],
            "context": list(self.context),
        }

    def usable_by(self, owner: str) -> bool:
        """Whether `owner` may read or continue this conversation."""
        return not self.deleted and self.owner == owner
