"""One streamed turn on each API surface, timed to its first text (`SURFACES`).

All surfaces share one turn pipeline; only parsing and rendering differ.
`measures.time_to_first_token` runs them interleaved with the upstream baseline (what
each adds, and each minus Chat Completions); the soak cycles through them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.benchmarks.harness import BenchStack

PROMPT = "[sim:long=5] hi"


def _first_text(
    http: requests.Session, url: str, body: dict[str, Any], has_text: Callable[[dict[str, Any]], bool]
) -> float:
    started = time.perf_counter()
    first = math.nan
    with http.post(url, json=body, stream=True, timeout=30) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if math.isnan(first) and line.startswith(b"data: {") and has_text(json.loads(line[6:])):
                first = time.perf_counter() - started
    if math.isnan(first):
        raise RuntimeError(f"{url} streamed no text")
    return first


def _chat(stack: BenchStack) -> float:
    return _first_text(
        stack.http,
        stack.completions_url,
        stack.chat_body(PROMPT),
        lambda chunk: any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []),
    )


def _responses(stack: BenchStack) -> float:
    body = {"model": stack.model, "input": PROMPT, "stream": True}
    return _first_text(
        stack.http,
        stack.web.url + "/v1/responses",
        body,
        lambda event: event.get("type") == "response.output_text.delta",
    )


def _messages(stack: BenchStack) -> float:
    body = {"model": stack.model, "max_tokens": 64, "stream": True}
    body["messages"] = [{"role": "user", "content": PROMPT}]
    return _first_text(
        stack.http,
        stack.web.url + "/v1/messages",
        body,
        lambda event: event.get("type") == "content_block_delta",
    )


SURFACES: dict[str, Callable[[BenchStack], float]] = {
    "chat": _chat,
    "responses": _responses,
    "messages": _messages,
}
