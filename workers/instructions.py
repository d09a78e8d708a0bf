"""Telling a continued upstream conversation that its instructions changed, compactly.

An upstream conversation is given the client's system prompt once, when it starts.
Clients change it between turns (Claude Code 2.1.197 adds and drops "(1M context)"
and sends a `system` message after the user's; an agent's instructions grow), and the
owner's ruling is that the change must reach the upstream, never silently keep the old
ones — but without starting over, which would re-prime the whole context. So the turn
is preceded by an "updated instructions" block: the changed lines when the old text is
known (a stored conversation), else the whole new text (a `store: false` conversation
keeps only a digest of it). `service.priming.update_plan` sends the block with the
prompt, in parts only if it is too long for one turn.

Pure: `update_block` compares texts and returns what to send ("" when nothing changed).
"""

from __future__ import annotations

import difflib

from service.state.conversations import normalize

CHANGED = (
    "[Updated instructions. The system instructions you were given have changed: "
    "the lines marked - no longer apply, the lines marked + apply from now on.]"
)
REPLACED = (
    "[Updated instructions. From now on, follow these system instructions instead of the earlier ones.]"
)
REMOVED = "[Updated instructions. The earlier system instructions no longer apply.]"


def changed(old: str, new: str) -> bool:
    """Whether `new` differs from `old` in more than what clients change in transit."""
    return normalize(old) != normalize(new)


def update_block(old: str | None, new: str) -> str:
    """The block announcing `new` to a conversation given `old` (None: unknown); "" if unchanged."""
    if old is not None and not changed(old, new):
        return ""
    new_text = normalize(new)
    if not new_text:
        return REMOVED
    full = f"{REPLACED}\n{new_text}"
    if old is None or not normalize(old):
        return full
    lines = [
        line
        for line in difflib.unified_diff(normalize(old).splitlines(), new_text.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    diff = f"{CHANGED}\n" + "\n".join(f"{line[0]} {line[1:]}" for line in lines)
    return diff if len(diff) < len(full) else full
