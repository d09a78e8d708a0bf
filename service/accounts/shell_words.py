"""The words of a copied cURL command, in the quoting the browser copied it with.

Browsers copy a request "as cURL" for two shells: bash (Chrome, Edge and Firefox quote with
`'…'`, and Chrome uses `$'…'` ANSI-C strings for bodies and odd headers; lines end in `\\`)
and Windows cmd (Chrome wraps every word in `^"…^"` with `^\\^"` for a quote and `^` before
other specials; Firefox writes one line of `"…"` words with `""` for a quote and `"%"` for a
percent sign). cmd is read in its two real passes: cmd.exe's own caret pass, then the C
runtime's argument split. Pure functions; `CaptureError` names what is wrong.
"""

from __future__ import annotations

import re

from service.accounts.errors import CaptureError

_C_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "f": "\f",
    "v": "\v",
    "?": "?",
}


def _bash_words(text: str) -> list[str]:
    """POSIX shell words with `$'…'` ANSI-C strings (Chrome uses them for bodies and odd headers)."""
    words: list[str] = []
    current: list[str] = []
    started = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":
                current.append(text[i + 1])
                started = True
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise CaptureError("the cURL text has an unclosed ' quote")
            current.append(text[i + 1 : end])
            started, i = True, end + 1
        elif c == "$" and text.startswith("$'", i):
            i, piece = _ansi_c(text, i + 2)
            current.append(piece)
            started = True
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\$`\n':
                    i += 1
                current.append(text[i])
                i += 1
            if i >= n:
                raise CaptureError('the cURL text has an unclosed " quote')
            started, i = True, i + 1
        elif c.isspace():
            if started:
                words.append("".join(current))
                current, started = [], False
            i += 1
        else:
            current.append(c)
            started, i = True, i + 1
    if started:
        words.append("".join(current))
    return words


def _ansi_c(text: str, i: int) -> tuple[int, str]:
    """The `$'…'` string starting at `i` (after the opening quote): (index after it, its value)."""
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == "'":
            return i + 1, "".join(out)
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "xuU":
                size = {"x": 2, "u": 4, "U": 8}[nxt]
                digits = re.match(rf"[0-9a-fA-F]{{1,{size}}}", text[i + 2 :])
                if digits:
                    out.append(chr(int(digits.group(0), 16)))
                    i += 2 + len(digits.group(0))
                    continue
            out.append(_C_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    raise CaptureError("the cURL text has an unclosed $' quote")


def _cmd_unescape(text: str) -> str:
    """cmd.exe's own pass: `^x` is x outside its quotes (a caret before a newline joins lines)."""
    out: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "^" and not quoted and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "\r" and text[i + 2 : i + 3] == "\n":
                i += 3
            elif nxt == "\n":
                i += 2
            else:
                out.append(nxt)
                i += 2
            continue
        if c == '"':
            quoted = not quoted
        out.append(c)
        i += 1
    return "".join(out)


def _crt_words(text: str) -> list[str]:
    """The Microsoft C runtime's argv split: `"` quotes, `\\"` a literal quote, `""` in quotes a quote."""
    words: list[str] = []
    current: list[str] = []
    started = quoted = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            run = len(text[i:]) - len(text[i:].lstrip("\\"))
            if i + run < n and text[i + run] == '"':
                current.append("\\" * (run // 2))
                if run % 2:
                    current.append('"')
                    i += run + 1
                else:
                    i += run
                started = True
                continue
            current.append("\\" * run)
            started, i = True, i + run
        elif c == '"':
            if quoted and text[i + 1 : i + 2] == '"':
                current.append('"')
                i += 2
                continue
            quoted, started, i = not quoted, True, i + 1
        elif c.isspace() and not quoted:
            if started:
                words.append("".join(current))
                current, started = [], False
            i += 1
        else:
            current.append(c)
            started, i = True, i + 1
    if started:
        words.append("".join(current))
    return words


def curl_words(text: str) -> list[str]:
    """The arguments of a copied cURL command, in whichever quoting it was copied."""
    lines = text.strip().splitlines()
    # Windows cmd: Chrome's `^"…^"` and `^` line ends; Firefox's one line with a double-quoted URL
    # (POSIX copies from either browser quote with ').
    is_cmd = (
        '^"' in text
        or any(line.rstrip().endswith("^") for line in lines)
        or re.match(r'\s*curl(?:\.exe)?\s+"', text) is not None
    )
    words = _crt_words(_cmd_unescape(text.strip())) if is_cmd else _bash_words(text.strip())
    if not words or words[0].lower() not in ("curl", "curl.exe"):
        raise CaptureError("the text is not a cURL command (copy the request with 'Copy as cURL')")
    return words[1:]
