"""Start the upstream simulator (ChatHub and Copilot) as a child process and steer it.

Tests, benchmarks and the offline demo all talk to the simulator over real loopback
sockets, so it runs as its own process (`python -m tests.simulator --port 0`), exactly
like a remote Bing would. `SimulatorProcess` owns that child: it learns the port from
the `READY` line, wraps the `/_sim/*` control endpoints, and makes sure the child dies
with us (SIGTERM, then SIGKILL; and the child exits by itself once its parent is gone).
"""

from __future__ import annotations

import gc
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn
from urllib.parse import quote

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


class SimulatorProcess:
    """A running simulator child process; use as a context manager or call start()/stop().

    With `tls=True` the child also serves every route over TLS (`https_url`, `wss_url`) with a
    test CA made at start-up (`ca_file`), records each TLS ClientHello (`tls_connections`) and
    can put a Cloudflare gate in front (`configure_cloudflare`, `cloudflare`, `grant_clearance`);
    see `tests.simulator.cloudflare`.

    Per-account limits default to unlimited here (0), unlike the simulator's own CLI
    defaults (B5a's 4 in flight / 15 a minute, which `deploy/start --demo` gets): the test
    suite runs hundreds of turns a minute on one account. `reset()` restores these
    start-up values; a test that wants limits calls `configure_limits` (or `set_account`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        token_delay: float = 0.005,
        max_turns: int = 30,
        expiry: float = 21600.0,
        words_per_update: int = 1,
        account_max_concurrent: int = 0,
        account_rpm: int = 0,
        log_level: str = "INFO",
        startup_timeout: float = 15.0,
        prefix: Sequence[str] = (),
        tls: bool = False,
    ) -> None:
        self.args = [
            "--host", host,
            "--port", "0",
            "--token-delay", str(token_delay),
            "--max-turns", str(max_turns),
            "--expiry", str(expiry),
            "--words-per-update", str(words_per_update),
            "--account-max-concurrent", str(account_max_concurrent),
            "--account-rpm", str(account_rpm),
            "--log-level", log_level,
        ]  # fmt: skip
        self.startup_timeout = startup_timeout
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", HOST]: run on another network namespace
        self.tls = tls
        self.https_url = ""
        """With `tls=True`: the TLS base URL, `https://localhost:PORT` (same routes as `http_url`)."""
        self.ca_file = ""
        """With `tls=True`: the PEM file of the simulator's test CA (the gateway's UPSTREAM_CA_BUNDLE)."""
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.http_url = ""
        self._log: IO[bytes] | None = None
        self.log_path: Path | None = None
        """The child's stderr while it runs (removed by stop())."""

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> SimulatorProcess:
        """Spawn the child and wait for its READY line."""
        self._log = tempfile.NamedTemporaryFile(prefix="chathub-sim-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)
        tls_args: list[str] = []
        if self.tls:
            self._tls_dir = tempfile.TemporaryDirectory(prefix="chathub-sim-tls-")
            tls_args = ["--tls-dir", self._tls_dir.name]
        self.process = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "tests.simulator",
                *self.args,
                *tls_args,
                "--parent-pid",
                str(os.getpid()),
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                self._fail("simulator did not start")
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        text = line.decode().strip()
        if not text.startswith("READY "):
            self._fail(f"unexpected simulator output {text!r}")
        urls = text.split(" ")[1:]
        self.http_url = urls[0]
        if self.tls and self._tls_dir is not None:
            self.https_url = urls[1]
            self.ca_file = str(Path(self._tls_dir.name) / "ca.pem")
        return self

    def _fail(self, what: str) -> NoReturn:
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{what}; simulator log:\n{tail}")

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 5 s) and close our pipe."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
            self._tls_dir = None

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the child's stderr log, for failure messages."""
        if self._log is None or self.log_path is None:
            return ""
        self._log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- addresses --------------------------------------------------------------------

    @property
    def create_url(self) -> str:
        """Bing's conversation-create endpoint on the simulator."""
        return f"{self.http_url}/turing/conversation/create"

    @property
    def chathub_url(self) -> str:
        """The ChatHub websocket URL (append `?sec_access_token=…`)."""
        return self.http_url.replace("http://", "ws://", 1) + "/sydney/ChatHub"

    @property
    def copilot_url(self) -> str:
        """Copilot's base URL (REST under `/c/api/…`, the websocket at `/c/api/chat`): the http base."""
        return self.http_url

    @property
    def copilot_chat_url(self) -> str:
        """The Copilot websocket URL (append `?api-version=2&clientSessionId=…`)."""
        return self.http_url.replace("http://", "ws://", 1) + "/c/api/chat"

    # -- control API ------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        response = requests.get(f"{self.http_url}/_sim/{path}", timeout=5)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.post(f"{self.http_url}/_sim/{path}", json=body or {}, timeout=5)
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        """Whether the simulator answers its health check."""
        return bool(self._get("health").get("ok"))

    def stats(self) -> dict[str, Any]:
        """Counters: creates, sockets (upgrades), open_sockets, idle_sockets, busy_sockets, invocations,
        rest_calls, violations.

        The top-level numbers add both dialects up; "chathub" and "copilot" hold each
        dialect's creates, sockets, open_sockets, idle_sockets (Copilot sockets waiting for
        their next turn), busy_sockets (open minus idle) and invocations (Copilot: `send` events).
        """
        return dict(self._get("stats"))

    def conversations(self, dialect: str | None = None) -> list[str]:
        """Ids of every conversation the simulator holds (of one dialect, if given)."""
        return list(self._get("conversations" + (f"?dialect={dialect}" if dialect else "")))

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        """One conversation's turns and injected context (with its "dialect"); LookupError if unknown."""
        url = f"{self.http_url}/_sim/conversations/{quote(conversation_id, safe='')}"
        response = requests.get(url, timeout=5)
        if response.status_code == 404:
            raise LookupError(f"the simulator has no conversation {conversation_id!r}")
        response.raise_for_status()
        return dict(response.json())

    def last_invocation(self) -> dict[str, Any] | None:
        """The `arguments[0]` of the last chat invocation received (None before any)."""
        result = self._get("last_invocation")
        return dict(result) if result is not None else None

    def last_send(self) -> dict[str, Any] | None:
        """The last Copilot `send` event received, whole (None before any)."""
        result = self._get("last_send")
        return dict(result) if result is not None else None

    def challenges(self) -> list[dict[str, Any]]:
        """Every Copilot challenge issued: method, parameter, id, variant, answered, token, solved."""
        return list(self._get("challenges"))

    def configure(self, **values: float | bool | str) -> dict[str, Any]:
        """Change run-time config; returns the whole config.

        Keys are `tests.simulator.state.CONFIG_KEYS`: ChatHub's max_turns / expiry_seconds /
        clock_offset, the shared token_delay / words_per_update / linger, and Copilot's
        copilot_strict / copilot_connected_twice / copilot_connected_delay /
        copilot_unknown_conversation_code / copilot_modes / hashcash_difficulty / hashcash_variant /
        hashcash_seed.
        """
        return dict(self._post("config", values))

    def forget(self, conversation_id: str) -> None:
        """Make the upstream forget a conversation entirely (as if expired or purged server-side)."""
        self._post("forget", {"conversation": conversation_id})

    def configure_limits(
        self, *, max_concurrent: int | None = None, rpm: int | None = None
    ) -> dict[str, Any]:
        """Set every account's default limits (0 or None = unlimited); returns the whole config."""
        return self.configure(account_max_concurrent=max_concurrent or 0, account_rpm=rpm or 0)

    def set_account(self, account: str, **values: Any) -> dict[str, Any]:
        """Configure one account (`fault`, `next_available_at`, `max_concurrent`, `rpm`); returns its view.

        `fault` is one of captcha, throttled, cloudflare, unauthorized, region, or None to
        clear; a throttled fault lapses at `next_available_at` (epoch seconds, default one
        minute on). Account names follow `tests.simulator.accounts.account_of`: the `_U`
        value, the access token, `anon:<cookie>`, or "anonymous".
        """
        return dict(self._post(f"accounts/{quote(account, safe='')}", values))

    def accounts(self) -> dict[str, dict[str, Any]]:
        """Per-account counters: turns, turns_last_minute, in_flight, max_in_flight, rejections
        (by kind: overload, rate, or a fault name), admitted (the start of each admitted turn's
        message, in arrival order), plus fault, next_available_at and limits."""
        return dict(self._get("accounts"))

    def reset(self) -> None:
        """Forget conversations and counters; restore the start-up config.

        If sockets are still open, collects garbage first: a client socket an earlier test
        dropped without closing stays open (and counted in `open_sockets`) until its object
        is finalized, so a test that counts open sockets would otherwise depend on when the
        collector last ran.
        """
        if self._get("stats")["open_sockets"]:
            gc.collect()
        self._post("reset")

    # -- TLS and the Cloudflare gate (tests.simulator.cloudflare) --------------------------

    @property
    def wss_url(self) -> str:
        """The TLS port as a websocket base, `wss://localhost:PORT` (+ `/c/api/chat` or `/sydney/ChatHub`)."""
        return self.https_url.replace("https://", "wss://", 1)

    def tls_connections(self) -> list[dict[str, Any]]:
        """Every TLS connection's ClientHello summary, newest last: ja3, ja3_hash, ja4, alpn, sni, client…"""
        return list(self._get("tls"))

    def configure_cloudflare(self, **values: bool | float) -> dict[str, Any]:
        """Set the gate (`enabled`, `require_clearance`, `clearance_ttl`); returns its settings."""
        return dict(self._post("config", {"cloudflare": values})["cloudflare"])

    def cloudflare(self) -> dict[str, Any]:
        """The gate's counters: challenged, passed, issued, last_reason, reasons, by_account, events."""
        return dict(self._get("cloudflare"))

    def grant_clearance(self, *, ja4: str, user_agent: str, client: str = "127.0.0.1") -> str:
        """A `cf_clearance` bound to that identity, as if it had passed the check."""
        body = {"ja4": ja4, "user_agent": user_agent, "client": client}
        return str(self._post("clearance", body)["cf_clearance"])
