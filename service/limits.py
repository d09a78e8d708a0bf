"""What each upstream accepts in one turn, and the 400 a request over it gets.

Copilot answers `{"event":"error","errorCode":"text-too-long"}` to a user text over
about 10,240 characters (upstream-protocols.md B5a); whether its page-context channel
(`context.edge.pageContent`, where the gateway injects history) shares that limit is
unknown, so injected context is kept within it too. ChatHub has no documented
per-message limit: only CONTEXT_MAX_CHARS bounds what the gateway sends it.

This is the one place the numbers live: the web tier checks a prompt against them
before anything is enqueued (every API surface calls `check_prompt`), and the
dialects trim injected history to `context_budget`. Plain module: both tiers import it.
"""

from __future__ import annotations

import dataclasses

from service.errors import InvalidRequest


@dataclasses.dataclass(frozen=True)
class InputLimits:
    """Characters one upstream accepts per turn; None = no documented limit."""

    message_chars: int | None = None
    context_chars: int | None = None


COPILOT_TEXT_LIMIT = 10_240

LIMITS: dict[str, InputLimits] = {
    "copilot": InputLimits(message_chars=COPILOT_TEXT_LIMIT, context_chars=COPILOT_TEXT_LIMIT),
    "bing": InputLimits(),
}


def input_limits(upstream: str) -> InputLimits:
    """The limits of `upstream` ("copilot" or "bing")."""
    return LIMITS.get(upstream, InputLimits())


def context_budget(upstream: str, max_chars: int) -> int:
    """Characters of history a new upstream conversation may be seeded with."""
    limit = input_limits(upstream).context_chars
    return max_chars if limit is None else min(max_chars, limit)


def too_long(limit: int, length: int, *, param: str = "messages") -> InvalidRequest:
    """OpenAI's `context_length_exceeded` 400, worded for a character limit."""
    return InvalidRequest(
        f"This model's maximum input is {limit} characters per message. However, your message "
        f"resulted in {length} characters. Please reduce the length of the messages.",
        param=param,
        code="context_length_exceeded",
    )


def check_prompt(text: str, upstream: str, *, param: str = "messages") -> None:
    """Raise the `context_length_exceeded` 400 if `text` is over what `upstream` accepts.

    `text` is exactly what will be sent as the user's message; any surface (Chat
    Completions, Responses, Anthropic Messages) calls this before enqueueing.
    """
    limit = input_limits(upstream).message_chars
    if limit is not None and len(text) > limit:
        raise too_long(limit, len(text), param=param)
