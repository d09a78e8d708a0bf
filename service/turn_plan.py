"""How one request becomes upstream turns: the text, the priming parts, and how many turns in all.

The upstream takes about 10 KB of text per turn (B5a: `text-too-long` over ~10,240
characters, and page context is kept within the same limit), while agent clients open
with 40–85 KB: Codex CLI's developer instructions, Claude Code's system prompt, or a
long history a stateless client brings to a fresh conversation. Cutting that away
would change what the model is told, so a new upstream conversation is *primed*
instead: the context (and, if it is itself too long, the user's message) goes over in
parts of at most `UPSTREAM_MAX_TURN_CHARS`, each as a turn of its own whose answer is
dropped, and then the real turn asks the question.

Every one of those turns costs the account a turn of its per-minute budget, so a request
may cause at most MAX_UPSTREAM_TURNS_PER_REQUEST of them (`upstream_turns`, counting
the priming parts, the turn itself and the one repair turn tools or structured output
may need). Both tiers run the same pure functions: the web tier refuses a request over
the cap before anything is enqueued (`check_turns`), and the worker plans what it sends
with `directives` and `plan`, so the door's count is the worker's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from service.errors import InvalidRequest
from service.tools import prompts
from service.tools.options import TurnOptions

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


def directives(
    prompt: str,
    system: str,
    options: TurnOptions,
    *,
    send_tools: bool,
    fresh: bool,
    budget: int,
    max_context: int,
) -> tuple[str, str]:
    """The user's message and the system text as sent upstream, with the gateway's directives.

    The tool block rides in the message when it fits the upstream's per-turn budget
    (models heed the message most); a long one (agent CLIs send 20-40 KB of schemas)
    joins the system text of a new upstream conversation, which priming carries in
    parts, if that stays within CONTEXT_MAX_CHARS (else the message itself is primed in
    parts). The tool-choice and format lines always ride in the message.
    """
    text = prompts.turn_text(prompt, options, send_tools=send_tools)
    block = prompts.instructions(options.tools) if send_tools else ""
    if fresh and len(text) > budget and len(system) + len(block) + 2 <= max_context:
        text = prompts.turn_text(prompt, options, send_tools=False)
        system = "\n\n".join(part for part in (system, block) if part)
    return text, system


def repairs(options: TurnOptions) -> int:
    """Upstream turns a request's answer may need beyond the first: one repair with tools or a format."""
    return 1 if options.calls_tools or options.output is not None else 0


def upstream_turns(
    prompt: str,
    history: Sequence[tuple[str, str]],
    system: str,
    options: TurnOptions,
    *,
    budget: int,
    max_context: int,
) -> int:
    """Turns one request costs on a new upstream conversation (the most it can cost)."""
    text, system = directives(
        prompt,
        system,
        options,
        send_tools=options.calls_tools,
        fresh=True,
        budget=budget,
        max_context=max_context,
    )
    primed = plan(text, history, system, budget=budget, max_context=max_context)
    return len(primed.primers) + 1 + repairs(options)


def too_many_turns(turns: int, cap: int, *, param: str = "messages") -> InvalidRequest:
    """The `context_length_exceeded` 400 of a request that would take more than `cap` upstream turns."""
    return InvalidRequest(
        f"This request would take {turns} upstream turns (its context is carried over in parts), more "
        f"than this gateway allows for one request ({cap}, MAX_UPSTREAM_TURNS_PER_REQUEST). Please "
        "reduce the length of the messages, the tools or the response format.",
        param=param,
        code="context_length_exceeded",
    )
