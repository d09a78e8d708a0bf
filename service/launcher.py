"""`python -m service.launcher`: the whole gateway on one machine, in one command.

Starts a private redis-server when `REDIS_URL` is unset, then one worker process and the
web tier (gunicorn, as in the Procfile), passing them the same environment. `--demo` also
starts the upstream simulator and points the gateway at it (both dialects), for trying
the product with no Microsoft account and no network. On a PaaS the Procfile runs the
web and worker processes directly instead.

What a first run must get right, and how:

- **It keeps what it was told.** Redis data (an append-only file) and the generated
  `SECRET_KEY` and Redis password live in the data directory (`DATA_DIR`, default
  `.data/` of the project), so conversations survive Ctrl-C and the next start.
- **It says the truth.** The port is checked before anything starts (a clear error
  naming `PORT`, not a success banner and gunicorn's retries); the banner comes once the
  web tier answers, and says where it listens and whether it is open or keyed.
- **It stops in order.** Children run in their own process groups, so a terminal's
  Ctrl-C reaches only this process, which stops the web tier first (streams in flight
  finish), then the workers (they drain their turns), then the simulator, then Redis.
  If any child dies, the rest are stopped the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from service.data_dir import PASSWORD_FILE, SECRET_FILE, data_dir, remove_redis_file, write_redis_file
from service.runtime.embedded_redis import EmbeddedRedis, free_port, read_or_create_secret
from service.runtime.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


class LaunchError(RuntimeError):
    """The stack cannot start; the message says what to change."""


@dataclasses.dataclass
class Child:
    """A started process, with how long it may take to stop gracefully."""

    name: str
    process: subprocess.Popen[str]
    grace: float


def _popen(argv: list[str], env: dict[str, str], *, stdout: int | None = None) -> subprocess.Popen[str]:
    # process_group=0: the terminal's Ctrl-C goes to the launcher alone, which stops
    # the children itself, in order.
    return subprocess.Popen(argv, cwd=ROOT, env=env, text=True, process_group=0, stdout=stdout)


def check_port(host: str, port: int) -> None:
    """Fail before anything starts if the web tier could not bind `host:port`."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LaunchError(
                f"port {port} is already in use on {host} ({exc.strerror}); stop what holds it, "
                f"or choose another port, e.g. PORT={port + 1} deploy/start"
            ) from None


def _start_simulator(env: dict[str, str]) -> tuple[Child, str]:
    process = _popen(
        [
            sys.executable,
            "-m",
            "tests.simulator",
            "--port",
            str(free_port()),
            "--parent-pid",
            str(os.getpid()),
            # The demo's one account would otherwise run out of turns within a minute of trying.
            "--account-rpm",
            "0",
            "--account-max-concurrent",
            "0",
        ],
        env,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise LaunchError(f"the simulator did not start (said {line!r})")
    return Child("simulator", process, grace=10), line.split(" ", 1)[1]


def _wait_ready(port: int, children: list[Child], stopping: list[bool]) -> bool:
    """Wait until the web tier answers /healthz; False if stopped or a child died first."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not stopping[0] and time.monotonic() < deadline:
        if any(child.process.poll() is not None for child in children):
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    if not stopping[0]:
        raise LaunchError(f"the web tier did not answer on port {port} within {READY_TIMEOUT:g}s")
    return False


def banner(settings: Settings, *, demo: bool) -> str:
    """The line that says where the gateway really listens and who may use it."""
    where = f"http://127.0.0.1:{settings.port}/v1"
    if settings.auth_enabled:
        access = (
            f"on every interface (port {settings.port}), keyed: {len(settings.api_keys)} static API key(s)"
            + (" and managed keys" if settings.admin_key else "")
            + " required"
        )
    elif settings.allow_open:
        access = (
            f"on every interface (port {settings.port}), OPEN (ALLOW_OPEN=1): anyone who reaches this port "
            "uses the upstream account"
        )
    else:
        access = (
            f"on loopback only (127.0.0.1:{settings.port}), open: no API_KEYS, so any key or none is "
            "accepted from this machine; set API_KEYS (or ALLOW_OPEN=1) to serve other machines"
        )
    upstream = f"{settings.upstream} (simulator)" if demo else settings.upstream
    if demo:
        upstream += (
            f"; demo: account limits lifted (ACCOUNT_RPM={settings.account_rpm}, "
            f"ACCOUNT_MAX_CONCURRENT={settings.account_max_concurrent}, none in the simulator)"
        )
    return f"launcher: gateway ready at {where}, {access}; upstream: {upstream}; Ctrl-C stops everything"


def _stop(children: Sequence[Child], redis: EmbeddedRedis | None) -> None:
    """Stop the children one kind at a time, newest first, then Redis."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(child.grace)
        except subprocess.TimeoutExpired:
            print(f"launcher: the {child.name} did not stop in {child.grace:g}s; killing it", flush=True)
            child.process.kill()
            child.process.wait(5)
    if redis is not None:
        redis.stop()


DEMO_LIMITS = {"ACCOUNT_RPM": "10000", "ACCOUNT_MAX_CONCURRENT": "50"}
"""The demo's pool limits: the real ones (12 turns a minute) would stop a first try at the fifth request."""


def lift_demo_limits(env: dict[str, str]) -> None:
    """Lift the per-account limits for the demo, unless the operator set them."""
    for name, value in DEMO_LIMITS.items():
        if not env.get(name, "").strip():
            env[name] = value


def _prepare(env: dict[str, str]) -> Path:
    """Give a local run what a PaaS would be told, a SECRET_KEY, before the settings are checked.

    The key is generated once and kept in the data directory (reused on every start: the
    account secrets in Redis are sealed with it), so `UPSTREAM_COOKIES=… deploy/start`,
    `ADMIN_KEY=…` and `API_KEYS=…` start without the operator inventing one.
    """
    directory = data_dir(env)
    if not env.get("SECRET_KEY", "").strip():
        env["SECRET_KEY"] = read_or_create_secret(directory / SECRET_FILE)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    """Run Redis (if needed), a worker and the web tier until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="also run the upstream simulator and use it")
    args = parser.parse_args(argv)

    env = dict(os.environ)
    children: list[Child] = []
    redis: EmbeddedRedis | None = None
    stopping = [False]

    def request_stop(signum: int, frame: object) -> None:
        stopping[0] = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    try:
        directory = _prepare(env)
        if args.demo:
            lift_demo_limits(env)
        settings = load_settings(env)
        check_port(settings.listen_host, settings.port)
        if not settings.redis_configured:
            redis = EmbeddedRedis(
                data_dir=directory / "redis",
                password=read_or_create_secret(directory / PASSWORD_FILE),
                detached=True,
                maxmemory=settings.redis_maxmemory,
            ).start()
            env["REDIS_URL"] = redis.url
            write_redis_file(directory, redis.port, keyed=settings.auth_enabled)
            print(
                f"launcher: embedded redis-server at {redis.address} (data in {directory}; "
                "deploy/admin finds it there)",
                flush=True,
            )
        if args.demo:
            simulator, url = _start_simulator(env)
            children.append(simulator)
            host = url.split("://", 1)[1]
            env["BING_CREATE_URL"] = f"{url}/turing/conversation/create"
            env["BING_CHATHUB_URL"] = f"ws://{host}/sydney/ChatHub"
            env["COPILOT_URL"] = url
            print(f"launcher: upstream simulator at {url}", flush=True)
        children.append(Child("worker", _popen([sys.executable, "-m", "workers"], env), grace=40))
        gunicorn = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]
        children.append(Child("web tier", _popen(gunicorn, env), grace=35))
        if _wait_ready(settings.port, children, stopping):
            print(banner(settings, demo=args.demo), flush=True)
        while not stopping[0]:
            if any(child.process.poll() is not None for child in children):
                print("launcher: a process exited; stopping the rest", flush=True)
                return 1
            time.sleep(0.2)
        print(
            "launcher: stopping the web tier, then the workers (they finish their turns), then the rest",
            flush=True,
        )
        return 0
    except (SettingsError, RuntimeError) as exc:  # LaunchError, or Redis that would not start
        print(f"launcher: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        # A second Ctrl-C while stopping must not interrupt the orderly stop with a traceback.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        _stop(children, redis)
        if redis is not None:
            remove_redis_file(data_dir(env))


if __name__ == "__main__":
    sys.exit(main())
