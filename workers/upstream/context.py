"""What every dialect is asked to send for one turn, and how unseen history is flattened.

`TurnInput` is dialect-neutral: the ChatHub dialect reads `tone`/`gpt4_turbo`, the
Copilot dialect reads `mode`. History and the system prompt matter only when the
upstream conversation is new (the upstream remembers the rest); both dialects inject
them as one block of text in the shape Bing's own "chat about this page" feature
uses — `[system](#additional_instructions)`, `[user](#message)`, `[assistant](#message)`
blocks — ChatHub through `previousMessages`, Copilot through its context channel.
`flatten_context` lives in `service.priming` (pure, so the web tier can count turns too).
`max_context_chars` is CONTEXT_MAX_CHARS; a dialect whose upstream accepts less lowers it
to `service.limits.context_budget` (Copilot's page context: ~10,240 characters).
"""

from __future__ import annotations

import dataclasses

from service.priming import flatten_context as flatten_context  # re-exported (pure, shared with the web)


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
