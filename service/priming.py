"""Priming a new upstream conversation with more context than one turn may carry.

The upstream takes about 10 KB of text per turn (B5a: `text-too-long` over ~10,240
characters, and page context is kept within the same limit), while agent clients open
with 40–85 KB: Codex CLI's developer instructions, Claude Code's system prompt, or a
long history a stateless client brings to a fresh conversation. Cutting that away
would change what the model is told, so a new upstream conversation is *primed*
instead: the context and the user's message go over as one text cut into parts of at
most `UPSTREAM_MAX_TURN_CHARS`, each a turn of its own. Every part but the last asks
only for "OK" (its answer is dropped); the last part carries the end of the context
and the user's message, marked, and its answer is the client's. So a context of C
characters with a prompt of P costs `turns(C + P, budget)` upstream turns: one per
`budget - OVERHEAD` characters, none extra for the question. Later turns continue the
same upstream conversation incrementally (by id, through history matching, or by
digest for `store: false`), so a session pays for priming once.

Everything here is pure and shared by both tiers: the worker's turn runner sends what
`plan` returns; the web tier's door can count a request's upstream turns with
`upstream_turns` before anything runs. `flatten_context` is the page-context text both
dialects inject (`workers.upstream.context` re-exports it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

PART = (
    "[Context part {index} of {total}. Read it and reply only with OK; my message is at the end "
    "of the last part.]\n\n{text}"
)
LAST = "[Context part {index} of {total}, the last. My message is at its end: answer it now.]\n\n{text}"
MESSAGE = "[My message]\n"
"""Marks where the user's message starts inside the primed text (the simulator reads it too)."""
OVERHEAD = max(
    len(PART.format(index=999, total=999, text="")), len(LAST.format(index=999, total=999, text=""))
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to send: `primers` (answers dropped), then `text` as the turn the client sees.

    `inject` says whether the history and system prompt still travel with `text` the
    ordinary way (they fit in one turn), or were primed and must not be injected again.
    """

    primers: tuple[str, ...]
    text: str
    inject: bool

    @property
    def turns(self) -> int:
        """Upstream turns this plan costs."""
        return len(self.primers) + 1


def turns(chars: int, budget: int) -> int:
    """Upstream turns that carry `chars` characters of primed text when each takes `budget`."""
    return max(1, math.ceil(chars / max(1, budget - OVERHEAD)))


def split(text: str, size: int, count: int | None = None, *, keep: int | None = None) -> list[str]:
    """`text` in at most `count` pieces of at most `size` characters (`count` defaults to the fewest).

    Each cut falls at the latest line end the remaining pieces still allow (else at
    `size`), so the number of pieces is exactly the fewest possible. `keep`: an offset
    the last cut should not pass when it can help it (the start of the user's message,
    so the message travels whole in the last piece).
    """
    count = count or max(1, math.ceil(len(text) / size))
    pieces: list[str] = []
    start = 0
    for left in range(count - 1, 0, -1):  # pieces still to come after this one
        if len(text) - start <= size:
            break
        low = max(start + 1, len(text) - size * left)  # the rest must still fit in `left` pieces
        high = min(start + size, len(text))
        if left == 1 and keep is not None and low <= keep < high:
            high = keep
        cut = text.rfind("\n", low, high + 1)
        cut = cut if cut >= low else high
        pieces.append(text[start:cut])
        start = cut
        while start < len(text) and text[start] == "\n":
            start += 1
    pieces.append(text[start:])
    return [piece for piece in pieces if piece.strip()] or [text]


def plan(
    prompt: str, history: Sequence[tuple[str, str]], system: str, *, budget: int, max_context: int
) -> Plan:
    """How to start a new upstream conversation within `budget` characters per turn."""
    context = flatten_context(history, system, max_context) if (history or system.strip()) else ""
    if len(context) <= budget and len(prompt) <= budget:
        return Plan((), prompt, inject=True)
    return _parts(f"{context}\n\n" if context else "", prompt, budget)


def _parts(lead: str, prompt: str, budget: int) -> Plan:
    body = f"{lead}{MESSAGE}{prompt}"
    size = budget - OVERHEAD
    pieces = split(body, size, turns(len(body), budget), keep=len(lead))
    total = len(pieces)
    primers = tuple(
        PART.format(index=i, total=total, text=piece) for i, piece in enumerate(pieces[:-1], start=1)
    )
    return Plan(primers, LAST.format(index=total, total=total, text=pieces[-1]), inject=False)


def upstream_turns(
    prompt: str, history: Sequence[tuple[str, str]], system: str, *, budget: int, max_context: int
) -> int:
    """Upstream turns a new upstream conversation for this request costs (1 when no priming)."""
    return plan(prompt, history, system, budget=budget, max_context=max_context).turns


def update_plan(prompt: str, instructions: str, *, budget: int) -> Plan:
    """The turn that tells a continued upstream conversation its instructions changed, then asks.

    `instructions` is the compact change (`workers.instructions`); it rides with the
    prompt in one turn when both fit, else in parts like a priming, the prompt last.
    """
    text = f"{instructions}\n\n{MESSAGE}{prompt}"
    if len(text) <= budget:
        return Plan((), text, inject=False)
    return _parts(f"{instructions}\n\n", prompt, budget)


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
