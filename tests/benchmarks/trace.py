"""`deploy/bench --trace`: one traced turn per dialect, phase by phase, to show where the time goes.

The gateway runs with TRACE_REQUESTS=1; after a few warm-up turns one streamed turn is sent
with `X-Gateway-Trace: 1`. Its two sides (`service.runtime.trace`, saved in Redis) are
merged on the wall clock with the client's own send and first-byte times: each line is a
phase, when it ended (ms after the client sent the request), how long it took since the
line before, and that side's Redis round trips so far.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from service.runtime import trace
from tests.benchmarks.harness import BenchStack
from tests.support.stack import wait_for

WARM_TURNS = 3


def _turn(stack: BenchStack, prompt: str, *, traced: bool) -> tuple[str, float, float]:
    """(completion id, client send time, client first-byte time) of one streamed turn."""
    headers = {trace.HEADER: "1"} if traced else {}
    sent = time.time()
    with stack.http.post(
        stack.completions_url, json=stack.chat_body(prompt), headers=headers, stream=True, timeout=60
    ) as response:
        response.raise_for_status()
        lines = response.iter_lines()
        next(line for line in lines if line)  # the first byte (an `id:` or a `data:` line)
        first_byte = time.time()
        first = next(line for line in lines if line.startswith(b"data: {"))
        for _ in lines:
            pass
    completion_id = json.loads(first.decode().removeprefix("data: "))["id"]
    return completion_id, sent, first_byte


Row = tuple[float, str, str, int, float]
"""(time, side, phase, round trips so far, that side's CPU ms since its previous mark)."""


def timeline(sides: dict[str, Any], sent: float, first_byte: float) -> list[Row]:
    """Every mark of both sides plus the client's two, in order."""
    rows: list[Row] = [(sent, "client", "sent", 0, 0.0), (first_byte, "client", "first_byte", 0, 0.0)]
    for side, data in sides.items():
        cpu = data.get("cpu") or [0.0] * len(data["marks"])
        spent = [0.0] + [(later - earlier) * 1000 for earlier, later in itertools.pairwise(cpu)]
        for (phase, when, round_trips), ms in zip(data["marks"], spent, strict=False):
            rows.append((when, side, phase, round_trips, ms))
    return sorted(rows)


def render(rows: list[Row], sides: dict[str, Any]) -> str:
    """The timeline as a table (with each side's CPU per phase), then each side's round trips."""
    start = rows[0][0]
    out = [f"{'ms':>8} {'+ms':>7}  {'side':<7}{'phase':<18}{'cpu ms':>7}  redis round trips"]
    previous = start
    for when, side, phase, round_trips, cpu_ms in rows:
        out.append(
            f"{(when - start) * 1000:8.2f} {(when - previous) * 1000:7.2f}  {side:<7}{phase:<18}"
            f"{cpu_ms:7.2f}  {round_trips}"
        )
        previous = when
    for side, data in sorted(sides.items()):
        out.append(f"{side} sends: " + ", ".join(data.get("commands", [])))
    return "\n".join(out)


def traced_turn(stack: BenchStack) -> str:
    """Warm the stack, trace one turn, return the printed timeline."""
    for n in range(WARM_TURNS):
        _turn(stack, f"warm-up {n}", traced=False)
    completion_id, sent, first_byte = _turn(stack, "Trace this turn, please.", traced=True)

    def both() -> dict[str, Any] | None:
        sides = trace.load(stack.redis, completion_id)
        return sides if {"web", "worker"} <= sides.keys() else None

    sides = wait_for(both, timeout=30)
    return render(timeline(sides, sent, first_byte), sides)
