"""Reading HTTP responses in tests: their lines as text, as they arrive."""

from __future__ import annotations

from collections.abc import Iterator

import requests


def text_lines(response: requests.Response) -> Iterator[str]:
    """The response's lines as `str`, lazily (a stream is read while the test acts on it).

    `iter_lines(decode_unicode=True)` decodes with the response's charset, which requests
    always knows for the gateway's and the simulator's text/* and JSON answers; it may yield
    bytes only when there is none, and then these are UTF-8.
    """
    for line in response.iter_lines(decode_unicode=True):
        yield line.decode() if isinstance(line, bytes) else line
