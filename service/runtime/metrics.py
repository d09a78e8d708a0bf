"""Prometheus metrics of both tiers, defined once, and how each process exposes them.

The web tier and the workers import the same metric objects; each records what it
sees. Every name is listed in docs/operating.md (Metrics). Labels never carry a
secret: an upstream account is named by its position (`"0"`, `"1"`, …), never by
its cookie.

Exposition:

- web (gunicorn, several processes): `deploy/gunicorn.conf.py` points
  `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before any app code imports
  prometheus-client, so every process writes its values to memory-mapped files
  there and `/metrics` merges them (`registry()` builds a `MultiProcessCollector`);
  gauges say how to merge (`livesum`: only live processes count). Without the
  variable (a single process: the dev server, tests) the default registry is used.
- workers: `start_worker_server(port)` serves this process's default registry on
  its own port (`WORKER_METRICS_PORT`), one port per worker process.

Metric objects are module globals, as prometheus-client intends: they register in
the default registry at import and hold no connection.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds; from a few ms (gateway overhead) to the upstream's minute-long first token.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# --- web tier ---------------------------------------------------------------------------
REQUESTS = Counter(
    "gateway_requests",
    "HTTP requests answered, by API surface, model and HTTP status.",
    ["surface", "model", "status"],
)
KEY_LIMITED = Counter(
    "gateway_key_limited",
    "Turns refused by their API key's limits, by limit (never by key: ids are unbounded).",
    ["limit"],
)

# --- workers ----------------------------------------------------------------------------
QUEUE_WAIT = Histogram(
    "gateway_queue_wait_seconds",
    "Time a turn waited on the RQ queue before a worker started it.",
    buckets=_LATENCY_BUCKETS,
)
GATEWAY_FIRST_TOKEN = Histogram(
    "gateway_added_first_token_seconds",
    "Time the gateway adds before the upstream is asked for a turn: queue wait plus the worker's "
    "set-up (from enqueue to the upstream request).",
    ["dialect"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_FIRST_TOKEN = Histogram(
    "gateway_upstream_first_token_seconds",
    "Time from the upstream request (conversation create when needed, then the turn) to its first "
    "text token.",
    ["dialect"],
    buckets=_LATENCY_BUCKETS,
)
TURNS_IN_FLIGHT = Gauge(
    "gateway_turns_in_flight",
    "Turns running in worker processes right now.",
    multiprocess_mode="livesum",
)
TURNS = Counter(
    "gateway_turns",
    "Turns finished by workers, by outcome (done, cancelled, error).",
    ["outcome"],
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors",
    "Turns that failed upstream, by error class (Throttled, CaptchaRequired, UpstreamTimeout, …).",
    ["error_class"],
)
TOKENS = Counter(
    "gateway_tokens",
    "Tokens of finished turns (cl100k estimate), by direction (in = prompt, out = answer) and model.",
    ["direction", "model"],
)
ACCOUNT_STATE = Gauge(
    "gateway_upstream_account_state",
    "1 for the state each upstream account is in (ready, cooling, blocked, …), 0 for the others.",
    ["account", "state"],
    multiprocess_mode="livemax",
)
ACCOUNT_IN_FLIGHT = Gauge(
    "gateway_upstream_account_in_flight",
    "Turns running on each upstream account right now.",
    ["account"],
    multiprocess_mode="livesum",
)

GROUP_TURNS = Counter(
    "gateway_account_group_turns",
    "Turns that took a slot on an upstream account, by the account group of their key.",
    ["group"],
)

# --- both tiers -------------------------------------------------------------------------
GROUP_UNAVAILABLE = Counter(
    "gateway_account_group_unavailable",
    "Turns refused because their key's account group has no account, by group (operator-named).",
    ["group"],
)
REDIS_ERRORS = Counter(
    "gateway_redis_errors",
    "Redis operations that failed, by tier (web, worker).",
    ["tier"],
)

ACCOUNT_STATES = ("ready", "cooling", "blocked")


def set_account_states(states: dict[str, str]) -> None:
    """Publish each account's state (account label → state); the account pool's hook.

    Exactly one state gauge per account is 1, so `sum by (state)` counts accounts.
    """
    for account, state in states.items():
        for candidate in {*ACCOUNT_STATES, state}:
            ACCOUNT_STATE.labels(account=account, state=candidate).set(1 if candidate == state else 0)


def account_labels(count: int) -> Iterable[str]:
    """Labels of `count` configured accounts (`"0"`, `"1"`, …); anonymous counts as one."""
    return [str(index) for index in range(max(1, count))]


def multiprocess_dir() -> str | None:
    """The directory of gunicorn's multi-process mode, or None for a single process."""
    return os.environ.get(MULTIPROC_ENV) or None


def registry() -> CollectorRegistry:
    """The registry `/metrics` should render: all web processes merged, or just this one."""
    directory = multiprocess_dir()
    if directory is None:
        return DEFAULT_REGISTRY
    merged = CollectorRegistry()
    # prometheus_client leaves this constructor unannotated.
    multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
    return merged


def exposition() -> bytes:
    """The text exposition format of `registry()`."""
    return generate_latest(registry())


def start_worker_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve this worker process's metrics on `port` (a daemon thread; dies with the process)."""
    start_http_server(port, addr=addr)
