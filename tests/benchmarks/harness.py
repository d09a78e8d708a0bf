"""The gateway as real processes on loopback, for one dialect, started and always stopped.

`running_stack(dialect)` starts an embedded redis-server, the upstream simulator, ONE
gevent worker process and ONE gunicorn web process (a single gevent worker), and
stops every one of them when the `with` block ends — normally, on an exception, or on
Ctrl-C (SIGINT) and SIGTERM, which `__main__` turns into `KeyboardInterrupt`. One
process per tier is the point: the figures are per process, so more of them would
only blur what one can do.

The gateway runs with its production timeouts and coalescing window, not the short
ones the end-to-end tests use, so the figures describe what a deploy would see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import requests
from redis import Redis

from service.models import catalog
from service.runtime.embedded_redis import EmbeddedRedis
from service.runtime.settings import Settings, load_settings
from tests.support.simulator import SimulatorProcess
from tests.support.stack import GunicornServer, WorkerProcess, gateway_env

log = logging.getLogger(__name__)

DIALECTS = ("bing", "copilot")
SIM_TOKEN_DELAY = 0.005  # the simulator's default pace; measurements that need another set it
WORKER_CONCURRENCY = 240  # room for the 220-session run plus stragglers of the one before
API_KEY = "bench-key-0123456789abcdef"
"""The stack's one static key. Issue #20 measures with key limits on: every turn's key quota and
room for a new conversation are checked (KEY_DEFAULT_RPM, KEY_DEFAULT_CONCURRENT and
KEY_MAX_CONVERSATIONS, set far above what a run sends: a soak stores 7,200 conversations)."""
KEY_LIMITS = {
    "KEY_DEFAULT_RPM": "1000000",
    "KEY_DEFAULT_CONCURRENT": "100000",
    "KEY_MAX_CONVERSATIONS": "1000000",
}


@dataclasses.dataclass
class BenchStack:
    """Handles on the running gateway of one dialect."""

    dialect: str
    env: dict[str, str]
    redis_server: EmbeddedRedis
    simulator: SimulatorProcess
    worker: WorkerProcess
    web: GunicornServer
    redis: Redis
    """An unnamed client for the benchmark's own reads (excluded from per-process counts)."""
    http: requests.Session = dataclasses.field(default_factory=requests.Session)
    """The time-to-first-token client: it keeps its connection alive, as the OpenAI and Anthropic
    SDKs (httpx) do, so a fresh TCP connection per request is not counted as the gateway's time."""

    def __post_init__(self) -> None:
        self.http.headers.update(self.headers)

    @property
    def headers(self) -> dict[str, str]:
        """What every benchmark client sends besides its body: the stack's key, when it has one."""
        key = self.env.get("API_KEYS", "").split(",")[0].strip()
        return {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def completions_url(self) -> str:
        """The Chat Completions endpoint on gunicorn."""
        return f"{self.web.url}/v1/chat/completions"

    @property
    def settings(self) -> Settings:
        """The settings the gateway processes run with (for the in-process baseline client)."""
        return load_settings(self.env)

    @property
    def model(self) -> str:
        """The dialect's first catalog model (the one a client would pick by default)."""
        return catalog(self.dialect)[0].id

    @property
    def worker_pid(self) -> int:
        """The pid of the (only) worker process."""
        assert self.worker.process is not None
        return self.worker.process.pid

    def chat_body(self, prompt: str, *, stream: bool = True) -> dict[str, Any]:
        """A one-message chat completion request in this dialect's default model."""
        return {"model": self.model, "messages": [{"role": "user", "content": prompt}], "stream": stream}

    def restart_worker(self) -> None:
        """Replace the worker with a fresh process, so its memory figures start from scratch."""
        self.worker.stop()
        self.worker = WorkerProcess(self.env).start()


def stack_env(redis_url: str, sim_url: str, dialect: str, **overrides: str) -> dict[str, str]:
    """Environment for the gateway processes: the test wiring, production timeouts, `dialect`, `overrides`."""
    defaults = Settings()
    env = {
        "UPSTREAM": dialect,
        "COPILOT_URL": sim_url,
        "WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "LOG_LEVEL": "WARNING",
        # gunicorn's own start/stop chatter would interleave with the figures.
        "GUNICORN_CMD_ARGS": "--log-level warning",
        "UPSTREAM_CONNECT_TIMEOUT": str(defaults.upstream_connect_timeout),
        "UPSTREAM_FIRST_TOKEN_TIMEOUT": str(defaults.upstream_first_token_timeout),
        "UPSTREAM_IDLE_TIMEOUT": str(defaults.upstream_idle_timeout),
        "QUEUE_WAIT_TIMEOUT": str(defaults.queue_wait_timeout),
        "WORKER_LEASE_SECONDS": str(defaults.worker_lease_seconds),
        "SSE_HEARTBEAT_SECONDS": str(defaults.sse_heartbeat_seconds),
        "STREAM_HOLD_SECONDS": str(defaults.stream_hold_seconds),
        "API_KEYS": API_KEY,
        **KEY_LIMITS,
    }
    env = gateway_env(redis_url, sim_url, **{**env, **overrides})
    if "UPSTREAM_SPARE_CONVERSATIONS" not in overrides:
        del env["UPSTREAM_SPARE_CONVERSATIONS"]  # the tests' pin: a benchmark measures the default
    return env


@contextlib.contextmanager
def running_stack(dialect: str, **overrides: str) -> Iterator[BenchStack]:
    """Start redis, the simulator, one worker and one web process; stop them all on exit.

    `overrides` change the gateway's environment (the Overload run's accounts and keys).
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}")
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(EmbeddedRedis())
        simulator = stack.enter_context(SimulatorProcess(token_delay=SIM_TOKEN_DELAY, log_level="WARNING"))
        env = stack_env(redis_server.url, simulator.http_url, dialect, **overrides)
        client = Redis.from_url(redis_server.url)
        stack.callback(client.close)
        bench = BenchStack(
            dialect=dialect,
            env=env,
            redis_server=redis_server,
            simulator=simulator,
            worker=WorkerProcess(env),
            web=GunicornServer(env, workers=1),
            redis=client,
        )
        # Callbacks run last-in first-out: the web tier stops before the worker it feeds.
        stack.callback(bench.http.close)
        stack.callback(lambda: bench.worker.stop())  # whichever worker is current by then
        stack.callback(bench.web.stop)
        bench.worker.start()
        bench.web.start()
        log.info("event=stack_ready dialect=%s url=%s", dialect, bench.web.url)
        yield bench
