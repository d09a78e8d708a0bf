"""What every dialect is asked to send for one turn, and how unseen history is flattened.

`TurnInput` is dialect-neutral: the ChatHub dialect reads `tone`/`gpt4_turbo`, the
Copilot dialect reads `mode`. History and the system prompt matter only when the
upstream conversation is new (the upstream remembers the rest); both dialects inject
them as one block of text in the shape Bing's own "chat about this page" feature
uses — `[system](#additional_instructions)`, `[user](#message)`, `[assistant](#message)`
blocks — ChatHub through `previousMessages`, Copilot through its context channel.
`max_context_chars` is CONTEXT_MAX_CHARS; a dialect whose upstream accepts less lowers it
to `service.limits.context_budget` (Copilot's page context: ~10,240 characters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class TurnImage:
    """One image of the new message, checked and loaded (`service.images`); `digest` is its sha256."""

    digest: str
    mime: str
    data: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class TurnInput:
    """One user turn; `history` and `system` are injected only into a new upstream conversation."""

    text: str
    tone: str = "Balanced"
    gpt4_turbo: bool = False
    mode: str = "chat"
    history: tuple[tuple[str, str], ...] = ()
    system: str = ""
    max_context_chars: int = 32000
    images: tuple[TurnImage, ...] = ()


def flatten_context(history: Sequence[tuple[str, str]], system: str, max_chars: int) -> str:
    """Earlier messages as one page of context text, newest kept when over `max_chars`.

    Over `max_chars`, the system block stays (cut only if it alone is too long) and the
    newest messages that fit are kept: the oldest whole messages go first, since the
    model needs the recent exchange most and a cut message reads as garbage.
    """
    system_block = f"[system](#additional_instructions)\n{system}" if system.strip() else ""
    blocks = []
    for role, content in history:
        if role not in ("user", "assistant"):
            raise ValueError(f"history role must be 'user' or 'assistant', not {role!r}")
        if content.strip():
            blocks.append(f"[{role}](#message)\n{content}")
    if len(system_block) >= max_chars:
        return system_block[:max_chars]
    kept: list[str] = []
    used = len(system_block)
    for block in reversed(blocks):
        cost = len(block) + (2 if used else 0)
        if used + cost > max_chars:
            break
        kept.append(block)
        used += cost
    kept.reverse()
    return "\n\n".join(([system_block] if system_block else []) + kept)
