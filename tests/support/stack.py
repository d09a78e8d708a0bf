"""Real processes for end-to-end tests: RQ workers, gunicorn, and an in-process Werkzeug server.

Every helper talks only to loopback and stops what it started, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import requests
from flask import Flask
from redis import Redis
from werkzeug.serving import make_server

from service.runtime.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]


def gateway_env(redis_url: str, sim_http_url: str, **overrides: str) -> dict[str, str]:
    """Environment for gateway processes pointed at `redis_url` and the simulator."""
    host = sim_http_url.split("://", 1)[1]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            (
                "BING_",
                "COPILOT_",
                "UPSTREAM",
                "API_KEYS",
                "RQ_",
                "REDIS_URL",
                "ACCOUNT_",
                "SECRET_KEY",
                "ADMIN_KEY",
            )
        )
    }
    env.update(
        {
            "REDIS_URL": redis_url,
            "BING_CREATE_URL": f"{sim_http_url}/turing/conversation/create",
            "BING_CHATHUB_URL": f"ws://{host}/sydney/ChatHub",
            "COPILOT_URL": sim_http_url,
            "UPSTREAM": "bing",
            "UPSTREAM_COOKIES": "_U=test-account; MUID=abc",
            "UPSTREAM_FIRST_TOKEN_TIMEOUT": "4",
            "UPSTREAM_IDLE_TIMEOUT": "3",
            "UPSTREAM_CONNECT_TIMEOUT": "3",
            "QUEUE_WAIT_TIMEOUT": "10",
            "WORKER_LEASE_SECONDS": "3",
            "SSE_HEARTBEAT_SECONDS": "2",
            "STREAM_HOLD_SECONDS": "1",
            "WORKER_CONCURRENCY": "50",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "SECRET_KEY": "test-secret-key-0123456789",
            # The suite runs hundreds of turns a minute on one account and injects one-off account
            # faults per prompt: the pool's limits and health are off here; tests/integration/
            # test_accounts.py runs the pool at its defaults.
            "ACCOUNT_MAX_CONCURRENT": "1000",
            "ACCOUNT_RPM": "100000",
            "ACCOUNT_HEALTH": "off",
            # Tests count the upstream conversations a turn creates and reset the simulator between
            # cases; a spare created in the background (on by default for Copilot) would blur both.
            # tests/integration/test_round_trips.py and test_upstream_sockets.py run with spares on.
            "UPSTREAM_SPARE_CONVERSATIONS": "off",
        }
    )
    env.update(overrides)
    return env


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy (returned), failing after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


class WorkerProcess:
    """`python -m workers` as a child process.

    `prefix` runs it under another command (`["ip", "netns", "exec", HOST]` puts it on
    another network namespace); `registry_url` is where the test checks it registered,
    when that is not the worker's own `REDIS_URL` (Sentinel, a relay).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        stderr: Path | None = None,
        prefix: Sequence[str] = (),
        registry_url: str | None = None,
    ) -> None:
        self.env = dict(env)
        self.stderr = stderr  # a file to collect the worker's log in, for tests that read it
        self.prefix = list(prefix)
        self.registry_url = registry_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> WorkerProcess:
        """Spawn the worker; it is ready once it has registered with RQ (awaited unless `wait=False`)."""
        log = self.stderr.open("ab") if self.stderr is not None else None
        try:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "workers"], cwd=ROOT, env=self.env, stderr=log
            )
        finally:
            if log is not None:
                log.close()
        if wait:
            self.wait_registered()
        return self

    def wait_registered(self, timeout: float = 15.0) -> None:
        """Block until RQ lists this worker (fails if it exits first)."""
        from redis import Redis
        from rq import Worker

        client = Redis.from_url(self.registry_url or self.env["REDIS_URL"])
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.process.returncode}")
                if any(w.pid == self.process.pid for w in Worker.all(connection=client)):
                    return
                time.sleep(0.05)
            raise RuntimeError("worker did not register in time")
        finally:
            client.close()

    @property
    def name_suffix(self) -> str:
        """The tail of the RQ worker name (`host.pid`)."""
        assert self.process is not None
        return f".{self.process.pid}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0, *, cold: bool = False) -> int | None:
        """Signal the worker and wait for it to exit; returns its exit code.

        `cold`: a second SIGTERM soon after the first ends running turns at once, where a warm
        stop waits up to the worker's 25 s shutdown grace for a turn a test left running.
        """
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        if cold:
            try:  # the first signal must be handled before the second makes the stop cold
                return self.process.wait(0.3)
            except subprocess.TimeoutExpired:
                self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-whatever, as on a crashed machine."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


class GunicornServer:
    """The production web server (gevent workers) as a child process."""

    def __init__(
        self,
        env: Mapping[str, str],
        workers: int = 1,
        stderr: IO[bytes] | None = None,
        *,
        prefix: Sequence[str] = (),
        host: str = "127.0.0.1",
        access_log: str = "/dev/null",
    ) -> None:
        self.stderr = stderr  # where its logs go (None: this process's stderr)
        self.access_log = access_log  # one line per request with its duration (the agents benchmark reads it)
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", HOST]: serve from another namespace
        self.port = free_port()
        self.env = dict(env, PORT=str(self.port), WEB_CONCURRENCY=str(workers))
        self.url = f"http://{host}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> GunicornServer:
        """Spawn gunicorn and wait until /healthz answers."""
        self.process = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "deploy/gunicorn.conf.py",
                "--access-logfile",
                self.access_log,
                "wsgi:app",
            ],
            cwd=ROOT,
            env=self.env,
            stderr=self.stderr,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not become healthy in time")

    def stop(self) -> None:
        """Stop gunicorn at once (SIGQUIT), then hard.

        Not SIGTERM: its graceful stop waits for every open connection, and one a client has
        just used keeps it waiting ~5 s. Tests of the graceful stop send SIGTERM themselves.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class WerkzeugServer:
    """A threaded Werkzeug server in this process, for apps built with test-specific settings."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> WerkzeugServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down."""
        self.server.shutdown()
        self._thread.join(5)


@contextlib.contextmanager
def served(env: dict[str, str], *, workers: int = 1) -> Iterator[tuple[str, Redis]]:
    """One worker and gunicorn on `env`, and a Redis client on its REDIS_URL; all stopped on exit."""
    worker = WorkerProcess(env).start()
    web = GunicornServer(env, workers=workers)
    client = Redis.from_url(env["REDIS_URL"])
    try:
        web.start()
        yield web.url, client
    finally:
        client.close()
        web.stop()
        worker.stop()
