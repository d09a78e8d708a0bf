"""Streams per web process, the Busbar method: many paced streams through ONE web process.

Busbar's streaming test holds N concurrent streams of 64 deltas, each delta 20 ms after
the one before, and asks two things of the gateway in between: that no delta arrives
more than 200 ms late, and that what it adds to each delta stays small (p99 ≤ 2 ms for
issue #20's target at N = 500). Here the simulator paces the deltas
(`[sim:slow=0.02][sim:stamp=64]`) and writes each one's send time into its text, so a
delta's delay is its arrival at the client minus that stamp: everything the gateway
adds (worker → Redis relay → web → SSE), on one clock.

The figure is about the web process, so the stack keeps its single gunicorn process but
gets as many worker processes as the streams need (`workers`, or one per
`WORKER_CONCURRENCY` streams): a worker that cannot hold its share would only measure
the worker. On a small machine the simulator, the workers and the client all compete
with the web process for the same cores; the load average printed with the figures says
how much. The web process's own CPU time per delta is measured too (all requests, SSE
framing and relay reads included), and with it how many such streams one core could
carry — an extrapolation, but one that contention on the machine does not distort much.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.benchmarks.harness import BenchStack
from tests.benchmarks.measures import stamped_tokens
from tests.benchmarks.probes import Probe, Sampler
from tests.benchmarks.report import Metric, Target, percentile
from tests.benchmarks.soak import web_worker_pid
from tests.benchmarks.streams import StreamOutcome, run_streams
from tests.support.stack import WorkerProcess

STREAMS = 500
DELTAS = 64
PACE = 0.02
MAX_DELAY_MS = 200.0
ADDED_P99_MS = 2.0
MS = 1000.0
SETUP_STREAMS = 100  # one-delta streams run to measure set-up CPU


@contextlib.contextmanager
def extra_workers(stack: BenchStack, count: int) -> Iterator[list[WorkerProcess]]:
    """`count` more worker processes beside the stack's own, stopped on the way out."""
    started: list[WorkerProcess] = []
    try:
        for _ in range(count):
            started.append(WorkerProcess(stack.env).start())
        yield started
    finally:
        for worker in started:
            worker.stop()


def peak_streaming(outcomes: Sequence[StreamOutcome]) -> int:
    """The most streams delivering deltas at the same instant (first delta → last delta).

    Not request → end: a stream still queued for a worker is open but not streaming, and
    Busbar's figure is streams the web process carries at once.
    """
    edges: list[tuple[float, int]] = []
    for outcome in outcomes:
        if outcome.contents:
            edges += [(outcome.contents[0][0], 1), (outcome.contents[-1][0], -1)]
    streaming = peak = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant: not overlapping
        streaming += step
        peak = max(peak, streaming)
    return peak


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (/proc/<pid>/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def workers_needed(streams: int, concurrency: int) -> int:
    """Worker processes for `streams` turns at once, each holding up to `concurrency`."""
    return max(1, math.ceil(streams / max(concurrency, 1)))


def setup_cpu_per_stream(stack: BenchStack, web: int, count: int, pace: float) -> float:
    """The web process's CPU seconds per stream of one delta: a stream's set-up, nearly all of it.

    Run after the paced streams, `count` at a time spread like them, so the figure splits
    the web CPU per delta into set-up (spread over a stream's deltas) and the relay path.
    """
    body = stack.chat_body(f"[sim:slow={pace:g}][sim:stamp=1] go")
    before = cpu_seconds(web)
    run_streams(
        stack.completions_url, [body] * count, stagger=0.5 / max(count, 1), timeout=60, headers=stack.headers
    )
    return (cpu_seconds(web) - before) / max(count, 1)


def streams_per_web_process(
    stack: BenchStack,
    *,
    streams: int = STREAMS,
    deltas: int = DELTAS,
    pace: float = PACE,
    workers: int = 0,
    ramp: float = 0.5,
    warmup: int = 5,
) -> list[Metric]:
    """`streams` concurrent streams of `deltas` deltas `pace` s apart through one web process.

    Clients arrive evenly over `ramp` seconds: 500 set-ups in one millisecond would
    measure the set-up burst, and a ramp longer than a stream (64 × 20 ms = 1.28 s)
    would never have them all open at once. `workers` = 0 picks one worker process per
    WORKER_CONCURRENCY streams.
    """
    concurrency = int(stack.env.get("WORKER_CONCURRENCY", "100"))
    total_workers = workers or workers_needed(streams, concurrency)
    body = stack.chat_body(f"[sim:slow={pace:g}][sim:stamp={deltas}] go")
    with extra_workers(stack, total_workers - 1):
        run_streams(stack.completions_url, [body] * warmup, timeout=30, headers=stack.headers)
        probe = Probe(stack.redis, stack.settings.queue_name)
        web = web_worker_pid(stack)
        cpu_before = cpu_seconds(web)
        with Sampler(probe) as sampler:
            outcomes = run_streams(
                stack.completions_url,
                [body] * streams,
                stagger=ramp / max(streams, 1),
                timeout=ramp + deltas * pace + 120,
                headers=stack.headers,
            )
        web_cpu = cpu_seconds(web) - cpu_before
        setup_cpu = setup_cpu_per_stream(stack, web, min(streams, SETUP_STREAMS), pace)
    delays = [latency * MS for _, latency in stamped_tokens(outcomes)]
    cpu_per_delta = web_cpu / len(delays) if delays else math.nan
    relay_cpu = (web_cpu - setup_cpu * streams) / len(delays) if delays else math.nan
    complete = sum(
        outcome.finished and sum(len(text.split()) for _, text in outcome.contents) >= deltas
        for outcome in outcomes
    )
    running = max((sample.running for sample in sampler.samples), default=0)
    return [
        Metric("busbar_workers", "worker processes behind the web process", total_workers, digits=0),
        Metric(
            "busbar_streaming",
            f"streams at once through one web process ({deltas}×{pace * MS:g} ms)",
            peak_streaming(outcomes),
            target=Target(">=", STREAMS),
            digits=0,
        ),
        Metric("busbar_running", "peak turns running in the workers", running, digits=0),
        Metric("busbar_complete", "streams with every delta", complete, unit=f"of {streams}", digits=0),
        Metric("busbar_deltas", "deltas measured", len(delays), unit=f"of {streams * deltas}", digits=0),
        Metric("busbar_p50", "added per-delta p50", percentile(delays, 50), unit="ms", digits=1),
        Metric(
            "busbar_p99",
            "added per-delta p99",
            percentile(delays, 99),
            unit="ms",
            target=Target("<=", ADDED_P99_MS),
            digits=1,
        ),
        Metric("busbar_web_cpu", "web process CPU per delta", cpu_per_delta * 1e6, unit="µs", digits=0),
        Metric(
            "busbar_setup_cpu",
            "web process CPU per stream set-up (request to its one delta)",
            setup_cpu * MS,
            unit="ms",
            digits=2,
        ),
        Metric(
            "busbar_relay_cpu",
            "web process CPU per delta beyond set-up",
            relay_cpu * 1e6,
            unit="µs",
            digits=0,
        ),
        Metric(
            "busbar_web_core",
            f"streams one web core could carry at that cost ({1 / pace:g} deltas/s each)",
            pace / cpu_per_delta if cpu_per_delta else math.nan,
            digits=0,
        ),
        Metric(
            "busbar_max",
            "max delta delay",
            max(delays, default=math.nan),
            unit="ms",
            target=Target("<=", MAX_DELAY_MS),
            digits=1,
        ),
    ]
