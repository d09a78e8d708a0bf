"""Priming a new upstream conversation with more context than one turn may carry.

The upstream takes about 10 KB of text per turn (B5a: `text-too-long` over ~10,240
characters, and page context is kept within the same limit), while agent clients open
with 40–85 KB: Codex CLI's developer instructions, Claude Code's system prompt, or a
long history a stateless client brings to a fresh conversation. Cutting that away
would change what the model is told, so a new upstream conversation is *primed*
instead: the context (and, if it is itself too long, the user's message) goes over in
parts of at most `UPSTREAM_MAX_TURN_CHARS`, each as a turn of its own whose answer is
dropped, and then the real turn asks the question. Later turns continue the same
upstream conversation incrementally (by id, or through history matching), so a
session pays for priming once.

`plan` is pure; the turn runner sends what it returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from workers.upstream.context import flatten_context

PART = (
    "[Context part {index} of {total}. Read it and reply only with OK; my question follows "
    "after the last part.]\n\n{text}"
)
FINAL = "[That was the last context part.]\n\n{prompt}"
LONG_PROMPT = "[My message was the last context part. Answer it now.]"
OVERHEAD = len(PART.format(index=999, total=999, text=""))


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to send: `primers` (answers dropped), then `text` as the turn the client sees.

    `inject` says whether the history and system prompt still travel with `text` the
    ordinary way (they fit in one turn), or were primed and must not be injected again.
    """

    primers: tuple[str, ...]
    text: str
    inject: bool


def split(text: str, size: int) -> list[str]:
    """`text` in pieces of at most `size` characters, cut at a paragraph or line end where possible."""
    pieces: list[str] = []
    rest = text
    while len(rest) > size:
        cut = max(rest.rfind("\n\n", 0, size), rest.rfind("\n", 0, size))
        if cut < size // 2:
            cut = size
        pieces.append(rest[:cut])
        rest = rest[cut:].lstrip("\n")
    if rest.strip():
        pieces.append(rest)
    return pieces


def plan(
    prompt: str, history: Sequence[tuple[str, str]], system: str, *, budget: int, max_context: int
) -> Plan:
    """How to start a new upstream conversation within `budget` characters per turn."""
    context = flatten_context(history, system, max_context) if (history or system.strip()) else ""
    if len(context) <= budget and len(prompt) <= budget:
        return Plan((), prompt, inject=True)
    body = context
    long_prompt = len(prompt) > budget - len(FINAL)
    if long_prompt:
        body = f"{body}\n\n[user](#message)\n{prompt}" if body else prompt
    pieces = split(body, budget - OVERHEAD)
    primers = tuple(
        PART.format(index=i, total=len(pieces), text=piece) for i, piece in enumerate(pieces, start=1)
    )
    return Plan(primers, LONG_PROMPT if long_prompt else FINAL.format(prompt=prompt), inject=False)
