"""Looking at the running gateway from outside: turns in flight, memory, Redis connections.

Everything here reads state the gateway already exposes, so measuring changes nothing:
RQ's started-job registry (read without RQ's clean-up, which would write), the
simulator's open websocket count, `/proc/<pid>/status` for resident memory, and Redis
`CLIENT LIST`, where every gateway connection is named `<role>:<pid>`
(`service.runtime.redis_conn.connect`). The benchmark's own connections carry no name and are
left out of the per-process counts.

A `Sampler` thread takes a `Sample` every few hundred milliseconds while a load runs.
Its work per sample is a couple of Redis round trips, so it barely competes with the
client event loop whose timestamps are being measured.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from types import TracebackType

from redis import Redis
from rq.registry import StartedJobRegistry

from tests.support.simulator import SimulatorProcess


def rss_kb(pid: int) -> int | None:
    """Resident set size of process `pid` in KiB (VmRSS), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at the gateway."""

    at: float
    """`time.monotonic()` of the sample."""
    running: int
    """Turns RQ records as started (running in a worker)."""
    connections: dict[str, int]
    """Open Redis connections per client name (`web:<pid>`, `worker:<pid>`)."""
    open_sockets: int | None = None
    """Upstream websockets the simulator has open, when asked for."""
    worker_rss_kb: int | None = None
    """The worker process's resident memory, when asked for."""


class Probe:
    """Reads the gateway's state; `worker_pid` and `simulator` add memory and socket counts."""

    def __init__(
        self,
        redis: Redis,
        queue_name: str,
        *,
        worker_pid: int | None = None,
        simulator: SimulatorProcess | None = None,
    ) -> None:
        self.redis = redis
        self.worker_pid = worker_pid
        self.simulator = simulator
        self._started = StartedJobRegistry(queue_name, connection=redis)

    def running_turns(self) -> int:
        """Jobs in the started registry; `cleanup=False` so reading never moves a job."""
        return int(self._started.get_job_count(cleanup=False))

    def connections(self) -> dict[str, int]:
        """Named Redis connections per client name; unnamed ones (ours) are not counted."""
        names = Counter(client.get("name", "") for client in self.redis.client_list())
        names.pop("", None)
        return dict(names)

    def sample(self) -> Sample:
        """One `Sample` now."""
        return Sample(
            at=time.monotonic(),
            running=self.running_turns(),
            connections=self.connections(),
            open_sockets=int(self.simulator.stats().get("open_sockets", 0)) if self.simulator else None,
            worker_rss_kb=rss_kb(self.worker_pid) if self.worker_pid else None,
        )


class Sampler:
    """Samples a `Probe` every `interval` seconds in a background thread while in a `with`."""

    def __init__(self, probe: Probe, interval: float = 0.2) -> None:
        self.probe = probe
        self.interval = interval
        self.samples: list[Sample] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.samples.append(self.probe.sample())
            except Exception:  # a probe that fails once (a busy simulator) must not end the run
                self.errors += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def peak_connections(self, role: str) -> int:
        """The most connections any one `role` process (`web`, `worker`) held at once."""
        return max(
            (
                count
                for sample in self.samples
                for name, count in sample.connections.items()
                if name.startswith(f"{role}:")
            ),
            default=0,
        )
