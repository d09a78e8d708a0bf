"""How the simulated model reads a primed context: "OK" to a part, the question in the last one.

The gateway sends a long context to a new upstream conversation in parts
(`service/priming.py`): each but the last asks for "OK", the last ends with the user's
message after a `[My message]` line. The real model answers a part in a few words, so
the simulator does too, instead of echoing ten thousand characters at typing speed (that
would make every benchmark measure the echo); in the last part it answers the message,
as it does after a note of changed instructions (`workers/instructions.py`), and the
message's own `[sim:…]` prefixes apply as if it had come alone.
Pure: both dialects' turn players call it.
"""

from __future__ import annotations

import re

HEADER = re.compile(r"\A\[Context part (\d+) of (\d+)[.,][^\]]*\]\n\n")
MESSAGE = "[My message]\n"
UPDATED = "[Updated instructions."
"""How the gateway's note of changed instructions starts; the message follows it after `MESSAGE`."""
ACK = "OK."


def ack(text: str) -> str | None:
    """The brief answer to a priming part that is not the last, else None."""
    found = HEADER.match(text)
    if found is None or found.group(1) == found.group(2):
        return None
    return ACK


def question(text: str) -> str:
    """The user's message inside the last part of a priming or after changed instructions
    (the text itself otherwise)."""
    found = HEADER.match(text)
    if found is None and not text.startswith(UPDATED):
        return text
    body = text[found.end() :] if found else text
    marker = body.rfind(MESSAGE)
    return body[marker + len(MESSAGE) :] if marker >= 0 else body
