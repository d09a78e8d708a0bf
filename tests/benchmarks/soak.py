"""`deploy/bench --soak MINUTES`: mixed surfaces at a steady rate; RSS of the web and worker
processes sampled every minute; growth reported as a slope (MiB a minute; target < 1).

One turn at a time, cycling through Chat Completions, Responses and Anthropic Messages
(streamed), paced to `rate` turns a second; a turn that fails is counted, not retried. RSS
is read from /proc (VmRSS) of the gunicorn *worker* process (the child serving requests,
not the master) and of the RQ worker. The slope is a least-squares fit over the samples
after the first (start-up allocations settle in the first minute).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from tests.benchmarks.harness import BenchStack
from tests.benchmarks.probes import rss_kb
from tests.benchmarks.report import Metric, Target
from tests.benchmarks.surfaces import SURFACES

KIB_PER_MIB = 1024.0


@dataclasses.dataclass
class Soak:
    """What a soak observed: (minutes since start, web RSS KiB, worker RSS KiB) samples and turns."""

    samples: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)
    turns: int = 0
    failures: int = 0

    def slope(self, column: int) -> float:
        """MiB per minute of column 1 (web) or 2 (worker), fitted over the samples after the first."""
        points = [(s[0], s[column] / KIB_PER_MIB) for s in self.samples[1:]]
        if len(points) < 2:
            return float("nan")
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        spread = sum((x - mean_x) ** 2 for x, _ in points)
        return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else float("nan")

    def metrics(self) -> list[Metric]:
        """The figures for the benchmark's table."""
        bound = Target("<=", 1)
        return [
            Metric("soak_turns", "soak turns", self.turns, digits=0),
            Metric("soak_failures", "soak turns failed", self.failures, target=Target("<=", 0), digits=0),
            Metric(
                "soak_web_slope", "soak web RSS slope", self.slope(1), unit="MiB/min", target=bound, digits=2
            ),
            Metric(
                "soak_worker_slope",
                "soak worker RSS slope",
                self.slope(2),
                unit="MiB/min",
                target=bound,
                digits=2,
            ),
        ]


def children(pid: int) -> list[int]:
    """The child processes of `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def web_worker_pid(stack: BenchStack) -> int:
    """The gunicorn worker serving the stack (its master's only child)."""
    assert stack.web.process is not None
    kids = children(stack.web.process.pid)
    return kids[0] if kids else stack.web.process.pid


def soak(
    stack: BenchStack,
    *,
    minutes: float,
    rate: float = 2.0,
    sample_every: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    announce: Callable[[str], None] = print,
) -> Soak:
    """Run the soak for `minutes`; sample RSS at the start and every `sample_every` seconds."""
    web_pid, worker_pid = web_worker_pid(stack), stack.worker_pid
    result = Soak()
    names = list(SURFACES)
    start = clock()
    end = start + minutes * 60.0
    next_sample = start
    while True:
        now = clock()
        if now >= next_sample:
            sample = ((now - start) / 60.0, rss_kb(web_pid) or 0, rss_kb(worker_pid) or 0)
            result.samples.append(sample)
            announce(
                f"soak {sample[0]:6.1f} min: web {sample[1] / KIB_PER_MIB:7.1f} MiB, "
                f"worker {sample[2] / KIB_PER_MIB:7.1f} MiB, turns {result.turns} ({result.failures} failed)"
            )
            next_sample += sample_every
        if now >= end:
            return result
        try:
            SURFACES[names[result.turns % len(names)]](stack)
        except Exception as exc:  # a soak counts failures, it does not stop on them
            if not result.failures:  # say what the first one was, once
                announce(f"soak first failure, turn {result.turns}: {exc!r}"[:300])
            result.failures += 1
        result.turns += 1
        time.sleep(max(0.0, start + result.turns / rate - clock()))
