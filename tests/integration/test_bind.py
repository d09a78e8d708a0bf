"""Who can reach the web tier, decided by the real gunicorn running the Procfile's `web` command.

Any 127.x.y.z address is this machine, but a socket bound to 127.0.0.1 accepts only
127.0.0.1: connecting through 127.0.0.2 tells "every interface" from "loopback only"
without needing a second network interface.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from service.runtime.embedded_redis import free_port
from tests.support.stack import wait_for

ROOT = Path(__file__).resolve().parents[2]
SECRET = "bind-test-secret-0123456789"


def procfile_web_command() -> list[str]:
    """The Procfile's `web:` line, with `gunicorn` run by this interpreter."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            argv = shlex.split(line.split(":", 1)[1])
            assert argv[0] == "gunicorn"
            return [sys.executable, "-m", "gunicorn", *argv[1:]]
    raise AssertionError("the Procfile has no web process")


def healthy(host: str, port: int) -> bool:
    try:
        return requests.get(f"http://{host}:{port}/healthz", timeout=2).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # not up yet: gunicorn binds before the app loads
        return False


@contextmanager
def procfile_web(redis_url: str, **settings: str) -> Iterator[tuple[int, Path]]:
    """The Procfile's web process on a fresh PORT (as a PaaS sets it); yields (port, its log)."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("API_KEYS", "ALLOW_OPEN", "SECRET_KEY", "CORS_", "REDIS_URL", "PORT"))
    }
    env.update(PORT=str(port), REDIS_URL=redis_url, WEB_CONCURRENCY="1", LOG_LEVEL="INFO", **settings)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "web.log"
        with log.open("w") as sink:
            process = subprocess.Popen(procfile_web_command(), cwd=ROOT, env=env, stdout=sink, stderr=sink)
        try:
            wait_for(lambda: healthy("127.0.0.1", port) or process.poll() is not None, timeout=30)
            assert process.poll() is None, log.read_text()
            wait_for(lambda: "event=web_access" in log.read_text(), timeout=10)
            yield port, log
        finally:
            # At once: a graceful stop would wait out the keepalive of a connection a test used.
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_no_keys_means_loopback_only_and_the_log_names_both_settings(redis_url: str) -> None:
    with procfile_web(redis_url) as (port, log):
        assert healthy("127.0.0.1", port)
        # A PaaS router (another address) cannot reach it: the health check fails.
        assert not healthy("127.0.0.2", port)
        text = log.read_text()
        assert f"Listening at: http://127.0.0.1:{port}" in text
        [line] = [line for line in text.splitlines() if "event=web_access" in line]
        assert "loopback-only" in line and "set API_KEYS" in line and "ALLOW_OPEN=1" in line


def test_allow_open_serves_every_interface_and_says_so(redis_url: str) -> None:
    with procfile_web(redis_url, ALLOW_OPEN="1") as (port, log):
        assert healthy("127.0.0.2", port)
        assert "mode=open" in log.read_text()


def test_keys_serve_every_interface(redis_url: str) -> None:
    with procfile_web(redis_url, API_KEYS="k1", SECRET_KEY=SECRET) as (port, log):
        assert healthy("127.0.0.2", port)
        assert "mode=keyed keys=1" in log.read_text()
        models = requests.get(f"http://127.0.0.2:{port}/v1/models", timeout=5)
        assert models.status_code == 401


@pytest.mark.parametrize("settings", [{"API_KEYS": "k1"}, {"API_KEYS": "k1", "SECRET_KEY": "short"}])
def test_keys_without_a_secret_key_stop_the_web_tier_at_start_up(
    redis_url: str, settings: dict[str, str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_KEYS", "SECRET_KEY", "REDIS_URL"))}
    env.update(PORT=str(free_port()), REDIS_URL=redis_url, **settings)
    done = subprocess.run(
        procfile_web_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "SECRET_KEY" in done.stderr and "Traceback" not in done.stderr
    assert "short" not in done.stderr.replace("shorter", "")
