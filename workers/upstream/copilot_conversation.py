"""A Copilot conversation, without I/O: its persistable handle and how it is created.

Copilot keeps conversations on the server, addressed by a short id alone (B4), so the
handle is little more than that id, the account whose cookies created it, the count of
completed turns and the images it already holds. `parse_create_response` turns the
`POST /c/api/conversations` reply (B1.1) into a handle or the right
`workers.upstream.errors` exception. Pure data to data, tested with no sockets.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from workers.upstream.copilot import CREDENTIALS_HINT, THROTTLE_RETRY_AFTER
from workers.upstream.errors import ProtocolError, Throttled, Unauthorized, UpstreamError

MAX_REMEMBERED_IMAGES = 32


@dataclasses.dataclass
class CopilotHandle:
    """What it takes to continue a Copilot conversation from any worker (B4).

    Only the id and the identity matter: the next turn sends the same `conversationId`
    on a new socket with the same cookies, so `account` pins the pool's account (its id)
    (anonymous conversations are bound to their anon cookie). `turns` counts completed
    turns; zero means history must still be injected.
    """

    conversation_id: str
    account: str = ""
    turns: int = 0
    created: float = 0.0
    # sha256 → attachment URL of images this conversation already has: never uploaded twice.
    images: dict[str, str] = dataclasses.field(default_factory=dict)

    dialect = "copilot"

    @property
    def fresh(self) -> bool:
        """No turn has been sent yet: history and system prompt must be injected."""
        return self.turns == 0

    @property
    def exhausted(self) -> bool:
        """Always False: Copilot documents no per-conversation turn limit."""
        return False

    def to_json(self) -> dict[str, Any]:
        """The handle as a JSON-plain dict, tagged with its dialect."""
        return {"dialect": self.dialect, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CopilotHandle:
        """Rebuild a stored handle; unknown keys are ignored, a missing id is a ValueError."""
        conversation_id = data.get("conversation_id")
        if not conversation_id or not isinstance(conversation_id, str):
            raise ValueError("a Copilot handle needs a conversation_id")
        return cls(
            conversation_id=conversation_id,
            account=account_id(data.get("account")),
            turns=int(data.get("turns") or 0),
            created=float(data.get("created") or 0.0),
            images={str(k): str(v) for k, v in (data.get("images") or {}).items()},
        )

    def remember_image(self, digest: str, url: str) -> None:
        """Record an uploaded image (the newest MAX_REMEMBERED_IMAGES are kept)."""
        self.images.pop(digest, None)
        self.images[digest] = url
        while len(self.images) > MAX_REMEMBERED_IMAGES:
            self.images.pop(next(iter(self.images)))

    def is_expired(self, now: float) -> bool:
        """Always False: Copilot documents no conversation expiry (B4, B7.6).

        A conversation Copilot forgot anyway (deleted in the account's UI, purged) shows
        up as `invalid-event` on the next `send`; the client raises `ConversationExpired`
        for it and the turn runner rolls over, as for ChatHub's expiry.
        """
        return False


def account_id(value: Any) -> str:
    """The account id a stored handle names; handles from before the pool kept the index (0 = env-1)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"env-{value + 1}"
    return str(value or "")


def parse_create_response(
    status: int, headers: Mapping[str, str], body: bytes, *, account: str = "", now: float = 0.0
) -> CopilotHandle:
    """Turn the `POST /c/api/conversations` reply (`{"id": …}`, B1.1) into a handle, or raise why not."""
    if status in (401, 403):
        raise Unauthorized(
            f"Copilot refused conversation create for account #{account} with HTTP {status}; "
            f"{CREDENTIALS_HINT}"
        )
    if status == 429:
        raise Throttled(
            f"Copilot rate-limited conversation create for account #{account} (HTTP 429)",
            retry_after=THROTTLE_RETRY_AFTER,
        )
    if status != 200:
        raise UpstreamError(f"Copilot conversation create failed with HTTP {status}")
    try:
        data = json.loads(body)
    except ValueError:
        kind = next((v for k, v in headers.items() if k.lower() == "content-type"), "unknown content type")
        raise UpstreamError(
            f"Copilot conversation create returned a non-JSON body ({kind}, {len(body)} bytes)"
        ) from None
    conversation_id = data.get("id") if isinstance(data, dict) else None
    if not conversation_id or not isinstance(conversation_id, str):
        raise ProtocolError("Copilot conversation create returned no conversation id")
    return CopilotHandle(conversation_id=conversation_id, account=account, created=now)
