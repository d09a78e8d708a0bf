"""Time to first token with the upstream far away: what a parked socket and a spare conversation save.

`python -m tests.benchmarks --upstream-rtt 40` (or `deploy/bench --upstream-rtt 40`). The
simulator sits behind `tests.support.latency_relay` (half the round trip added each way),
as the real Copilot sits tens of milliseconds from a PaaS region. One Copilot stack (one
worker, one web process) runs three ways, one after another in the same run:

- `before`: UPSTREAM_KEEP_SOCKETS=0, UPSTREAM_SPARE_CONVERSATIONS=0 (a socket per turn, a
  conversation created on demand);
- `sockets`: the account's socket kept between turns (`workers.upstream.socket_park`);
- `sockets+spare`: and a conversation created ahead of need (`workers.spare_conversations`).

Each way measures, on a warm account, a new conversation's first turn and a continued
conversation's turn: client-observed time to the first content chunk, and the upstream round
trips before it (the simulator's REST calls plus websocket upgrades, read at the first token;
the spare's refill happens after the turn's stream, and the runs are paced so it is done).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from service.runtime.embedded_redis import EmbeddedRedis, free_port
from tests.benchmarks.harness import API_KEY, SIM_TOKEN_DELAY, stack_env
from tests.benchmarks.report import Metric, percentile
from tests.support.simulator import SimulatorProcess
from tests.support.stack import ROOT, GunicornServer, WorkerProcess

WAYS = (
    ("before", {"UPSTREAM_KEEP_SOCKETS": "0", "UPSTREAM_SPARE_CONVERSATIONS": "0"}),
    ("sockets", {"UPSTREAM_KEEP_SOCKETS": "1", "UPSTREAM_SPARE_CONVERSATIONS": "0"}),
    ("sockets+spare", {"UPSTREAM_KEEP_SOCKETS": "1", "UPSTREAM_SPARE_CONVERSATIONS": "1"}),
)
PAUSE = 0.4  # between turns: a user's think time, long enough for a spare's refill to land
PROMPT = "[sim:long=5] hi"


@contextlib.contextmanager
def relay(target: str, rtt_ms: float) -> Iterator[str]:
    """A latency relay in front of `target` (a base URL); yields the relay's base URL."""
    parts = urlsplit(target)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.latency_relay",
            "127.0.0.1",
            str(port),
            parts.hostname or "127.0.0.1",
            str(parts.port),
            str(rtt_ms / 2),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"READY"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _round_trips(simulator: SimulatorProcess) -> int:
    stats = simulator.stats()
    return int(stats["rest_calls"]) + int(stats["copilot"]["sockets"])


def _turn(url: str, simulator: SimulatorProcess, conversation: str | None) -> tuple[float, int, str]:
    """One streamed turn: (seconds to the first content, upstream round trips before it, conversation id)."""
    body: dict[str, Any] = {
        "model": "Balanced",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
    }
    if conversation:
        body["conversation_id"] = conversation
    before = _round_trips(simulator)
    started = time.perf_counter()
    first, trips = math.nan, -1
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with requests.post(
        f"{url}/v1/chat/completions", json=body, headers=auth, stream=True, timeout=60
    ) as response:
        response.raise_for_status()
        conversation = response.headers.get("X-Conversation-Id") or conversation or ""
        for line in response.iter_lines():
            if not math.isnan(first) or not line.startswith(b"data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if any((choice.get("delta") or {}).get("content") for choice in choices):
                first = time.perf_counter() - started
                trips = _round_trips(simulator) - before
    if math.isnan(first):
        raise RuntimeError("the gateway streamed no content")
    return first, trips, conversation


def _way(
    name: str,
    overrides: dict[str, str],
    redis_url: str,
    simulator: SimulatorProcess,
    upstream: str,
    runs: int,
) -> list[Metric]:
    env = stack_env(redis_url, simulator.http_url, "copilot", COPILOT_URL=upstream, **overrides)
    worker, web = WorkerProcess(env), GunicornServer(env, workers=1)
    try:
        worker.start()
        web.start()
        _, _, conversation = _turn(web.url, simulator, None)  # warm: pools, the account, its socket
        time.sleep(PAUSE)
        figures: dict[str, tuple[list[float], list[int]]] = {"new": ([], []), "continued": ([], [])}
        for _ in range(runs):
            for kind in ("new", "continued"):
                took, count, _ = _turn(web.url, simulator, None if kind == "new" else conversation)
                figures[kind][0].append(took)
                figures[kind][1].append(count)
                time.sleep(PAUSE)
    finally:
        web.stop()
        worker.stop()
    metrics = []
    for kind, (seconds, trips) in figures.items():
        label = f"{name}: {kind} conversation"
        for pct in (50, 90):
            value = percentile(seconds, pct) * 1000
            metrics.append(Metric(f"{name}_{kind}_p{pct}", f"{label}, TTFT p{pct}", value, "ms"))
        metrics.append(
            Metric(f"{name}_{kind}_trips", f"{label}, upstream round trips before it", max(trips), digits=0)
        )
    return metrics


def measure(rtt_ms: float, *, runs: int, announce: Callable[[list[Metric]], None]) -> list[Metric]:
    """Every way of `WAYS` against one simulator behind one relay; the figures in order."""
    metrics = [Metric("load", "machine load (1-min avg) before", os.getloadavg()[0], digits=2)]
    with (
        EmbeddedRedis() as redis_server,
        SimulatorProcess(token_delay=SIM_TOKEN_DELAY, log_level="WARNING") as simulator,
        relay(simulator.http_url, rtt_ms) as upstream,
    ):
        for name, overrides in WAYS:
            new = _way(name, overrides, redis_server.url, simulator, upstream, runs)
            announce(new)
            metrics.extend(new)
    metrics.append(Metric("load_after", "machine load (1-min avg) after", os.getloadavg()[0], digits=2))
    return metrics
