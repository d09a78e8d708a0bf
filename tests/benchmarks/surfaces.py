"""Time to first token on each API surface, next to Chat Completions.

All surfaces share one turn pipeline; only parsing and rendering differ. So the figure
that matters is the difference: each surface's p50 minus Chat Completions' p50, with the
runs interleaved (the order rotates run by run) so every surface sees the same machine.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.benchmarks.harness import BenchStack
from tests.benchmarks.report import Metric, Target, percentile

PROMPT = "[sim:long=5] hi"
MS = 1000.0


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


def surface_ttft(stack: BenchStack, *, runs: int, warmup: int = 3) -> list[Metric]:
    """TTFT p50 per surface, and what Responses and Messages add over Chat Completions."""
    seconds: dict[str, list[float]] = {name: [] for name in SURFACES}
    names = list(SURFACES)
    for index in range(warmup + runs):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            took = SURFACES[name](stack)
            if index >= warmup:
                seconds[name].append(took)
    p50 = {name: percentile(values, 50) for name, values in seconds.items()}
    metrics = [
        Metric(f"ttft_{name}_p50", f"TTFT {name} p50 (n={runs})", p50[name] * MS, unit="ms") for name in names
    ]
    for name in ("responses", "messages"):
        metrics.append(
            Metric(
                f"ttft_{name}_vs_chat_p50",
                f"TTFT {name} minus chat p50",
                (p50[name] - p50["chat"]) * MS,
                unit="ms",
                target=Target("<=", 1),
                digits=2,
            )
        )
    return metrics
