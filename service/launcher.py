"""`python -m service.launcher`: the whole gateway on one machine, in one command.

Starts a private redis-server on loopback when `REDIS_URL` is unset, then the web tier
(gunicorn, as in the Procfile) and one worker process, passing them the same
environment; Ctrl-C (or SIGTERM) stops them all, and if any child dies the rest are
stopped too. `--demo` also starts the upstream simulator and points the gateway at it (both
dialects), for trying the product with no Microsoft account and no network.

On a PaaS the Procfile runs the web and worker processes directly instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from service.embedded_redis import EmbeddedRedis, free_port
from service.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def _start_simulator(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.simulator", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"the simulator did not start (said {line!r})")
    return process, line.split(" ", 1)[1]


def _stop(processes: Sequence[subprocess.Popen[str]], timeout: float = 30.0) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: Sequence[str] | None = None) -> int:
    """Run Redis (if needed), the web tier and a worker until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="also run the upstream simulator and use it")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    children: list[subprocess.Popen[str]] = []
    redis: EmbeddedRedis | None = None
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        if args.demo:
            simulator, url = _start_simulator(env)
            children.append(simulator)
            host = url.split("://", 1)[1]
            env["BING_CREATE_URL"] = f"{url}/turing/conversation/create"
            env["BING_CHATHUB_URL"] = f"ws://{host}/sydney/ChatHub"
            env["COPILOT_URL"] = url
            print(f"launcher: upstream simulator at {url}", flush=True)
        settings = load_settings(env)
        if settings.redis_url is None:
            redis = EmbeddedRedis().start()
            env["REDIS_URL"] = redis.url
            print(f"launcher: embedded redis-server at {redis.url}", flush=True)
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
                cwd=ROOT,
                env=env,
            )
        )
        children.append(subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env))
        print(
            f"launcher: gateway on http://127.0.0.1:{settings.port}/v1 (upstream: {settings.upstream}); "
            "Ctrl-C stops everything",
            flush=True,
        )
        while not stopping:
            if any(child.poll() is not None for child in children):
                print("launcher: a process exited; stopping the rest", flush=True)
                return 1
            time.sleep(0.2)
        return 0
    except (SettingsError, RuntimeError) as exc:
        print(f"launcher: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        _stop(list(reversed(children)))
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())
