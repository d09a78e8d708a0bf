"""The I/O-free steps a turn plan is made of.

`turns` (ChatHub) and `copilot_turns` (Copilot) yield them; `playback.perform` executes them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Send:
    """Send one websocket text message (possibly several 0x1E records)."""

    message: str


@dataclasses.dataclass(frozen=True)
class Sleep:
    """Pause the stream."""

    seconds: float


@dataclasses.dataclass(frozen=True)
class Close:
    """End the socket: a close handshake with `code`/`reason`, or an abrupt TCP abort."""

    abrupt: bool = False
    code: int = 1011
    reason: str = "Connection closed with an error."


@dataclasses.dataclass(frozen=True)
class Hang:
    """Send nothing more; keep the socket open until the client gives up."""


Action = Send | Sleep | Close | Hang
