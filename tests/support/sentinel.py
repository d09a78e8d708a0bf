"""A real Redis primary, replica and Sentinels, as child processes, for failover tests.

All three kinds are the same `redis-server` binary (`redis-server sentinel.conf --sentinel`
for a Sentinel). Each node may run under a `prefix` command (`ip netns exec HOST`) and
bind its own address, so the multi-host test can put each on its own network namespace.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis import Redis

from service.runtime.embedded_redis import redis_server_binary

MASTER = "gateway"


class RedisNode:
    """One redis-server (a data node, or a Sentinel when `sentinel_of` is given)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        replica_of: tuple[str, int] | None = None,
        sentinel_of: tuple[str, int] | None = None,
        prefix: Sequence[str] = (),
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.host = host
        self.port = port
        self.prefix = list(prefix)
        self.is_sentinel = sentinel_of is not None
        self._dir = tempfile.mkdtemp(prefix="gateway-ha-")
        lines = [
            f"port {port}",
            f"bind {host}",
            "protected-mode no",
            f'dir "{self._dir}"',
            "loglevel warning",
            f'logfile "{self._dir}/log"',
        ]
        if sentinel_of is not None:
            lines += [
                f"sentinel monitor {MASTER} {sentinel_of[0]} {sentinel_of[1]} 2",
                f"sentinel down-after-milliseconds {MASTER} {down_after_ms}",
                f"sentinel failover-timeout {MASTER} {failover_timeout_ms}",
                f"sentinel parallel-syncs {MASTER} 1",
            ]
        else:
            lines += ['save ""', "appendonly no", "repl-diskless-sync-delay 0"]
            if replica_of is not None:
                lines.append(f"replicaof {replica_of[0]} {replica_of[1]}")
        self.config = Path(self._dir) / "node.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) as Sentinel reports it."""
        return (self.host, self.port)

    def client(self) -> Redis:
        """A plain client straight to this node (not through Sentinel)."""
        return Redis(host=self.host, port=self.port, socket_connect_timeout=1, socket_timeout=2)

    def start(self, timeout: float = 10.0) -> RedisNode:
        """Spawn the node and wait until it answers PING."""
        args = [redis_server_binary(), str(self.config)] + (["--sentinel"] if self.is_sentinel else [])
        self.process = subprocess.Popen(
            self.prefix + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        client = self.client()
        try:
            while True:
                try:
                    client.ping()
                    return self
                except Exception:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis node {self.host}:{self.port} did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: the node vanishes as on a crashed machine."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        """Kill the node and remove its directory."""
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)


class SentinelCluster:
    """A primary, one replica and three Sentinels monitoring them (quorum 2)."""

    def __init__(
        self,
        primary: tuple[str, int],
        replica: tuple[str, int],
        sentinels: Sequence[tuple[str, int]],
        *,
        prefixes: dict[str, Sequence[str]] | None = None,
    ) -> None:
        prefixes = prefixes or {}
        self.primary = RedisNode(*primary, prefix=prefixes.get(primary[0], ()))
        self.replica = RedisNode(*replica, replica_of=primary, prefix=prefixes.get(replica[0], ()))
        self.sentinels = [
            RedisNode(host, port, sentinel_of=primary, prefix=prefixes.get(host, ()))
            for host, port in sentinels
        ]

    @property
    def nodes(self) -> list[RedisNode]:
        """Every process of the cluster."""
        return [self.primary, self.replica, *self.sentinels]

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        """Start every node; return once each Sentinel knows the replica and both other Sentinels."""
        try:
            for node in self.nodes:
                node.start()
            deadline = time.monotonic() + timeout
            while not self._settled():
                if time.monotonic() > deadline:
                    raise RuntimeError("the sentinels did not discover each other and the replica in time")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def _settled(self) -> bool:
        for node in self.sentinels:
            client = node.client()
            try:
                state: Any = client.sentinel_master(MASTER)  # redis-py types it dict | bool
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
            except Exception:
                return False
            finally:
                client.close()
        replica = self.replica.client()
        try:
            return replica.info("replication").get("master_link_status") == "up"
        except Exception:
            return False
        finally:
            replica.close()

    def master_address(self) -> tuple[str, int] | None:
        """Where the first answering Sentinel says the primary is."""
        for node in self.sentinels:
            client = node.client()
            try:
                address: Any = client.sentinel_get_master_addr_by_name(MASTER)  # typed bool | None
                host, port = address
                return (host.decode() if isinstance(host, bytes) else str(host), int(port))
            except Exception:
                continue
            finally:
                client.close()
        return None

    def stop(self) -> None:
        """Kill every node; remove their directories."""
        for node in self.nodes:
            node.stop()
