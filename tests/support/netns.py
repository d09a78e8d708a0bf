"""Separate hosts on one machine: Linux network namespaces on a bridge, each with its own address.

`Network` builds a private /24 the test owns: a Linux bridge in the root namespace (the
test process itself is the ".1" host on it, so it can drive and observe the others) and
one namespace per host, joined by a veth pair. Every name carries a per-run prefix,
`gwmh<pid>x`, with the pid of the test process that owns it: stale ones are deleted first,
but only those whose owner is gone (two test runs as root on one machine must not kill each
other's hosts), and `close()` kills every process left in its own namespaces and deletes
them and the bridge.

Latency between hosts: `tc qdisc … netem delay` on each host's interface when the kernel
has netem; otherwise `latency` is "userspace" and the test adds it with
`tests.support.latency_relay` on the paths that matter (to Redis).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shutil
import signal
import subprocess

BASE = "gwmh"
CLONE_NEWNET = 0x40000000


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be built here (None when they can)."""
    if os.geteuid() != 0:
        return "building network namespaces needs root (CI runs this test as root)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"{BASE}{os.getpid()}xprobe"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`ip netns` is unavailable: {getattr(exc, 'stderr', '') or exc}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclasses.dataclass(frozen=True)
class Host:
    """One namespace: its name, its address on the bridge, and the command prefix to run in it."""

    name: str
    namespace: str
    address: str

    @property
    def prefix(self) -> list[str]:
        """Prepend to a command to run it on this host."""
        return ["ip", "netns", "exec", self.namespace]

    def enter_in_this_thread(self) -> None:
        """Move the calling thread onto this host: sockets it opens from now on are the host's.

        A network namespace is per thread (`setns(2)`), so a thread pool whose threads call
        this at start is a client on this host inside the test process.
        """
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns to {self.namespace}: {os.strerror(errno)}")
        finally:
            os.close(fd)

    def pids(self) -> list[int]:
        """Every process running in this host's namespace."""
        out = _ip("netns", "pids", self.namespace, check=False).stdout
        return [int(pid) for pid in out.split()]

    def kill_all(self) -> list[int]:
        """SIGKILL every process on the host, as a machine that loses power; returns their pids."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids


class Network:
    """A bridge, a private /24, and hosts on it."""

    def __init__(self, delay_ms: float = 2.0) -> None:
        # Link names are at most 15 characters: "gwmh" + pid (≤ 7 digits) + "x" + "br"/"v10".
        self.run = str(os.getpid())
        self.prefix = f"{BASE}{self.run}x"
        self.bridge = f"{self.prefix}br"
        self.delay_ms = delay_ms
        self.subnet = ""
        self.address = ""
        self.latency = "none"
        self.hosts: dict[str, Host] = {}

    def start(self) -> Network:
        """Delete stale namespaces and links of earlier runs, then build the bridge."""
        delete_stale()
        self.subnet = _free_subnet()
        self.address = f"{self.subnet}.1"
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def add_host(self, name: str) -> Host:
        """A new namespace with `lo` up and `eth0` on the bridge at the next address."""
        index = len(self.hosts) + 10
        host = Host(name, f"{self.prefix}-{name}", f"{self.subnet}.{index}")
        self.hosts[name] = host
        outside, inside = f"{self.prefix}v{index}", f"{self.prefix}p{index}"
        _ip("netns", "add", host.namespace)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("link", "set", inside, "netns", host.namespace)
        run = ["-n", host.namespace]
        _ip(*run, "link", "set", inside, "name", "eth0")
        _ip(*run, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip(*run, "link", "set", "eth0", "up")
        _ip(*run, "link", "set", "lo", "up")
        self._add_latency(host)
        return host

    def _add_latency(self, host: Host) -> None:
        if self.latency == "userspace":
            return
        added = subprocess.run(
            [
                *host.prefix,
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                f"{self.delay_ms}ms",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if added.returncode == 0:
            self.latency = "netem"
        elif self.latency == "netem":
            raise RuntimeError(f"netem worked on one host but not on {host.name}: {added.stderr.strip()}")
        else:
            self.latency = "userspace"  # no sch_netem: the test relays Redis traffic with a delay

    def close(self) -> None:
        """Kill what runs on the hosts, delete the namespaces and the bridge (veths go with them)."""
        for host in self.hosts.values():
            host.kill_all()
            _ip("netns", "del", host.namespace, check=False)
        delete_stale(self.prefix)  # veth ends left in the root namespace, the bridge


def owner_alive(name: str) -> bool:
    """Whether the test process named in `gwmh<pid>x…` still runs (its network is not stale)."""
    digits = name.removeprefix(BASE).partition("x")[0]
    if not digits.isdigit():
        return False  # an older naming scheme, or garbage: no owner to protect
    try:
        os.kill(int(digits), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_stale(prefix: str | None = None) -> None:
    """Remove namespaces and links named `prefix…` (killing what still runs in them).

    Without a prefix: every `gwmh…` whose owner process is gone (another run's live network
    is left alone).
    """

    def ours(name: str) -> bool:
        if prefix is not None:
            return name.startswith(prefix)
        return name.startswith(BASE) and not owner_alive(name)

    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if ours(name):
            Host(name, name, "").kill_all()
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        fields = line.split(":")
        if len(fields) > 1:
            link = fields[1].strip().split("@")[0]
            if ours(link):
                _ip("link", "del", link, check=False)


def _free_subnet() -> str:
    """A 10.213.X /24 no route of this machine uses."""
    routes = _ip("route", "show", check=False).stdout
    for third in range(10, 250):
        candidate = f"10.213.{third}"
        if f"{candidate}." not in routes:
            return candidate
    raise RuntimeError("no free 10.213.X.0/24 subnet")
