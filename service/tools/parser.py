"""Finding tool calls in answer text: strict format, tolerant reading, a streaming filter.

What real models do with "answer in this format": wrap the block in a code fence, put
prose before it, add a sentence after it, drop the closing tag at the very end, write
the JSON bare inside a ```json fence, pass `arguments` as a JSON string, or put several
calls in one array. `parse` accepts all of that; anything after the first call is
not shown to the client (it is markup or commentary on a call that has not run yet).

`StreamFilter` lets text stream while holding back only what could be the start of
markup (`<tool_call>`, a code fence, or a `{` opening the answer), so prose before a
call reaches the client as it arrives and the call's raw markup never does.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from service.tools import schema_check
from service.tools.options import TurnOptions
from service.tools.prompts import CLOSE, OPEN

FENCE = "```"
TEMPLATE = "<function name>"
_FENCE_BODY = re.compile(r"```[A-Za-z_]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_NAME_START = re.compile(r'\{\s*"name"\s*:')


@dataclasses.dataclass(frozen=True)
class Call:
    """One parsed call: the function name and its arguments as a compact JSON object text."""

    name: str
    arguments: str


@dataclasses.dataclass(frozen=True)
class Parsed:
    """The prose before the first call, the valid calls, and what was wrong with the rest."""

    prose: str
    calls: tuple[Call, ...]
    problems: tuple[str, ...]
    found_markup: bool
    start: int = 0  # where the first call's markup begins in the answer text


def _could_start(fragment: str, target: str) -> bool:
    return target.startswith(fragment) or fragment.startswith(target)


def _classify_fence(held: str) -> str | None:
    """'markup', 'text' or None (undecided yet) for text starting at a code fence."""
    newline = held.find("\n", 3)
    if newline < 0:
        return None if re.fullmatch(r"`{1,3}[A-Za-z_]*[ \t]*", held) else "text"
    return _classify_body(held[newline + 1 :].lstrip())


def _classify_body(body: str) -> str | None:
    if not body:
        return None
    if body.startswith(OPEN) or _NAME_START.match(body) or body.startswith("["):
        return "markup"
    if OPEN.startswith(body):
        return None
    squashed = re.sub(r"\s+", "", body)
    if '{"name":'.startswith(squashed):
        return None
    return "text"


class StreamFilter:
    """Splits streamed answer text into what the client may see now and what is held.

    `feed` returns the text safe to show; after `finish`, `parse` reads the whole answer.
    """

    def __init__(self) -> None:
        self.text = ""
        self.shown = 0
        self.captured = False  # a call's markup started: nothing more is shown

    def feed(self, delta: str) -> str:
        """Take new answer text; return the part that can go to the client now."""
        self.text += delta
        if self.captured:
            return ""
        safe = self._safe_end()
        while safe > self.shown and self.text[safe - 1].isspace():
            safe -= 1  # whitespace may separate prose from a call: shown once more text follows
        out, self.shown = self.text[self.shown : safe], max(self.shown, safe)
        return out

    def _safe_end(self) -> int:
        """How far the text can be shown: up to the first possible start of markup."""
        text, i = self.text, self.shown
        while i < len(text):
            char = text[i]
            if char == "<" and _could_start(text[i : i + len(OPEN)], OPEN):
                if text[i:].startswith(OPEN):
                    self.captured = True
                return i
            if char == "`":
                verdict = _classify_fence(text[i:])
                if verdict != "text":
                    self.captured = verdict == "markup"
                    return i
                i = text.find("\n", i) + 1 or len(text)  # a genuine code block: show its first line
                continue
            if char == "{" and not text[:i].strip():
                verdict = _classify_body(text[i:])
                if verdict != "text":
                    self.captured = verdict == "markup"
                    return i
            i += 1
        return len(text)

    def rest(self, parsed: Parsed) -> str:
        """After the answer ended: held text that turned out not to be a call (shown late)."""
        held = (
            self.text[self.shown : parsed.start].rstrip() if parsed.found_markup else self.text[self.shown :]
        )
        self.shown = len(self.text)
        return held


def _candidates(text: str) -> list[tuple[int, str]]:
    """(start, JSON text) of every call-shaped region, in order."""
    found: list[tuple[int, int, str]] = []
    for match in re.finditer(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|\Z)", text, re.S):
        body = match.group(1).strip()
        fenced = _FENCE_BODY.match(body)
        found.append((match.start(), match.end(), fenced.group(1).strip() if fenced else body))
    for match in _FENCE_BODY.finditer(text):
        if any(start <= match.start() < end for start, end, _ in found):
            continue
        body = match.group(1).strip()
        if _NAME_START.match(body) or (body.startswith("[") and '"name"' in body):
            found.append((match.start(), match.end(), body))
    stripped = text.lstrip()
    if not found and _NAME_START.match(stripped):
        found.append((len(text) - len(stripped), len(text), stripped))
    # The format line of the instruction block, quoted back (e.g. a model recalling what it was
    # told), is not a call.
    return [(start, body) for start, _, body in sorted(found) if TEMPLATE not in body]


def _decode(body: str) -> list[Any]:
    """The call(s) in `body`; ValueError when it is not JSON, or nests too deeply for the parser."""
    try:
        try:
            value = json.loads(body)
        except ValueError:
            value, _ = json.JSONDecoder().raw_decode(body)  # trailing junk after the object
    except RecursionError:
        raise ValueError("nested too deeply") from None
    return value if isinstance(value, list) else [value]


def parse(text: str, options: TurnOptions) -> Parsed:
    """Read the calls in a whole answer and validate each against its tool's schema."""
    candidates = _candidates(text)
    if not candidates:
        return Parsed(prose=text.strip(), calls=(), problems=(), found_markup=False)
    calls: list[Call] = []
    problems: list[str] = []
    for _, body in candidates:
        try:
            items = _decode(body)
        except ValueError:
            problems.append("a tool call was not valid JSON")
            continue
        for item in items:
            try:
                call, problem = _check(item, options)
            except RecursionError:  # arguments nested near the parser's own limit
                call, problem = None, "a tool call nested its JSON too deeply"
            if call is not None:
                calls.append(call)
            if problem:
                problems.append(problem)
    if not calls and not problems:
        return Parsed(prose=text.strip(), calls=(), problems=(), found_markup=False)
    if not options.parallel and len(calls) > 1:
        calls = calls[:1]
    start = candidates[0][0]
    return Parsed(
        prose=text[:start].strip(),
        calls=tuple(calls),
        problems=tuple(problems),
        found_markup=True,
        start=start,
    )


def _check(item: Any, options: TurnOptions) -> tuple[Call | None, str]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None, "a tool call had no function name"
    name = item["name"]
    tool = options.tool(name)
    if tool is None:
        return None, f"there is no function named {name}"
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return None, f"the arguments of {name} were not valid JSON"
    if not isinstance(arguments, dict):
        return None, f"the arguments of {name} were not a JSON object"
    if tool.parameters:
        # A broken schema lets the arguments pass: we cannot hold the model to it.
        problem = schema_check.mismatch(arguments, tool.parameters)  # no retrieval, RE2 patterns
        if problem is not None:
            return None, f"the arguments of {name} were invalid ({problem})"
    return Call(name=name, arguments=json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))), ""
