"""`python -m tests.benchmarks [--dialect D] [--quick] [--overload|--agents]` (or `deploy/bench`).

`--trace` traces one turn per dialect instead: each phase from the client's send to the
first SSE byte, with each side's Redis round trips (tests/benchmarks/trace.py).

`--soak MINUTES` runs mixed surfaces at a steady rate instead and reports the RSS slope of
the web and worker processes (tests/benchmarks/soak.py).

`--busbar` runs only the streams-per-web-process figure (`busbar`: `--streams` paced
streams through one web process, as many workers as they need); the default run ends
with it too (`--streams 0` skips it). `--sessions` sets how many long turns the
sessions-per-worker figure offers one worker (default 220).

`--sessions-only` runs only the sessions-per-worker figure (`--sessions` long turns offered
to one fresh worker; peak running turns and worker RSS per session).

`--upstream-rtt MS` instead puts the simulator behind a relay adding MS of round trip and
measures a Copilot turn's time to first token and upstream round trips for a new and a
continued conversation, with the account's socket and spare conversation off and on
(tests/benchmarks/upstream_rtt.py).

`--overload` runs the Overload benchmark (`overload`: three accounts, four keys, 200
clients; a few minutes per dialect) instead of the four default measurements.
`--agents` runs the agent session benchmark (`agents`: Codex CLI, Claude Code, the
Agents SDK and the anthropic SDK on a scripted five-step task, upstream turns of
`--turn-seconds`; Copilot dialect unless `--dialect` says otherwise).

Measures each dialect on a stack of its own, prints every figure as it is measured and
one side-by-side table at the end. The exit code is 0 whether targets were met or not
(benchmarks measure, they do not assert); it is 1 only if a dialect could not be
measured at all, and 130 after Ctrl-C. Every process started is stopped either way.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from types import FrameType

from tests.benchmarks import agents, busbar, matching, measures, overload, soak, trace, upstream_rtt
from tests.benchmarks.harness import DIALECTS, WORKER_CONCURRENCY, running_stack
from tests.benchmarks.report import Metric, announce, table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: which dialect(s), and whether to take fewer samples."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument(
        "--dialect", choices=[*DIALECTS, "both"], default="both", help="upstream dialect(s) to measure"
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 TTFT runs instead of 100, fewer history lookups (~1.5 min)"
    )
    parser.add_argument(
        "--overload",
        action="store_true",
        help="run the Overload benchmark instead (3 accounts, 4 keys, 200 clients; ~6 min per dialect, "
        "~3 with --quick)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="instead: trace one turn per dialect, phase by phase with Redis round trips (seconds)",
    )
    parser.add_argument(
        "--soak",
        type=float,
        metavar="MINUTES",
        help="instead: mixed surfaces at a steady rate for MINUTES, web and worker RSS sampled each minute",
    )
    parser.add_argument(
        "--upstream-rtt",
        type=float,
        metavar="MS",
        help="instead: Copilot TTFT and upstream round trips with the simulator MS away (round trip), "
        "parked sockets and spare conversations off vs on (~1 min; fewer runs with --quick)",
    )
    parser.add_argument(
        "--agents",
        action="store_true",
        help="run the agent session benchmark instead (real Codex CLI and Claude Code, the Agents SDK, "
        "the anthropic SDK; a scripted 5-step task; a few minutes)",
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=measures.SESSIONS,
        help=f"long turns offered to one worker at once (sessions per worker; default {measures.SESSIONS})",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=busbar.STREAMS,
        help=f"streams at once through one web process, the Busbar method (default {busbar.STREAMS}; "
        "64 deltas 20 ms apart; 0 skips it)",
    )
    parser.add_argument(
        "--stream-workers",
        type=int,
        default=0,
        help="worker processes behind the web process for --streams (default: one per WORKER_CONCURRENCY)",
    )
    parser.add_argument(
        "--busbar",
        action="store_true",
        help="instead: only the Busbar streams figure (--streams, --stream-workers)",
    )
    parser.add_argument(
        "--sessions-only",
        action="store_true",
        help="instead: only the sessions-per-worker figure (--sessions long turns, one worker; ~1 min)",
    )
    parser.add_argument(
        "--turn-seconds",
        type=float,
        default=3.5,
        help="with --agents: how long each simulated upstream turn takes (default 3.5, the real service's)",
    )
    return parser.parse_args(argv)


def measure_soak(dialect: str, *, minutes: float, metrics: list[Metric]) -> None:
    """Start a stack, soak it for `minutes`, append the RSS slopes to `metrics`."""
    metrics.append(Metric("load", "machine load (1-min avg) before", os.getloadavg()[0], digits=2))
    with running_stack(dialect) as stack:
        print(f"[{dialect}] soak for {minutes:g} min: web {stack.web.url}", flush=True)
        new = soak.soak(
            stack, minutes=minutes, announce=lambda line: print(f"[{dialect}] {line}", flush=True)
        )
        announce(dialect, new.metrics())
        metrics.extend(new.metrics())


def measure_trace(dialect: str, *, quick: bool, metrics: list[Metric]) -> None:
    """Start a stack that keeps traces and print one turn's timeline (no figures for the table)."""
    with running_stack(dialect, TRACE_REQUESTS="1") as stack:
        print(f"[{dialect}] one traced turn:\n{trace.traced_turn(stack)}", flush=True)


def run_agents(args: argparse.Namespace) -> int:
    """The agent session benchmark: one column per client."""
    dialect = "copilot" if args.dialect == "both" else args.dialect
    results, failures = agents.run_all(dialect, args.turn_seconds)
    print("\n" + table(results, failures), flush=True)
    return 1 if not results else 0


def run_upstream_rtt(args: argparse.Namespace) -> int:
    """Copilot behind a latency relay, parked sockets and spares off vs on: one column."""
    try:
        metrics = upstream_rtt.measure(
            args.upstream_rtt, runs=10 if args.quick else 30, announce=lambda new: announce("copilot", new)
        )
    except KeyboardInterrupt:
        print("\ninterrupted; every process started was stopped", flush=True)
        return 130
    print("\n" + table({"copilot": metrics}, {}), flush=True)
    return 0


def measure_overload(dialect: str, *, quick: bool, metrics: list[Metric]) -> None:
    """Start a stack with three accounts and four keys, overload it, append the figures to `metrics`."""
    started = time.monotonic()
    metrics.append(Metric("load", "machine load (1-min avg) before", os.getloadavg()[0], digits=2))
    with running_stack(dialect, **overload.ENV) as stack:
        print(f"[{dialect}] overload stack up: web {stack.web.url}; this takes a few minutes", flush=True)
        new = overload.measure(stack, run_seconds=120.0 if quick else 240.0)
        announce(dialect, new)
        metrics.extend(new)
    print(f"[{dialect}] done in {time.monotonic() - started:.0f} s", flush=True)


def measure_busbar(dialect: str, *, args: argparse.Namespace, metrics: list[Metric]) -> None:
    """Start a stack, run only the Busbar streams figure, append it to `metrics`."""
    metrics.append(Metric("load", "machine load (1-min avg) before", os.getloadavg()[0], digits=2))
    with running_stack(dialect) as stack:
        print(f"[{dialect}] {args.streams} streams through one web process", flush=True)
        new = busbar.streams_per_web_process(stack, streams=args.streams, workers=args.stream_workers)
        announce(dialect, new)
        metrics.extend(new)
    metrics.append(Metric("load_after", "machine load (1-min avg) after", os.getloadavg()[0], digits=2))


def measure_sessions(dialect: str, *, args: argparse.Namespace, metrics: list[Metric]) -> None:
    """Start a stack, run only the sessions-per-worker figure, append it to `metrics`."""
    metrics.append(Metric("load", "machine load (1-min avg) before", os.getloadavg()[0], digits=2))
    concurrency = max(WORKER_CONCURRENCY, args.sessions + 20)
    with running_stack(dialect, WORKER_CONCURRENCY=str(concurrency)) as stack:
        print(f"[{dialect}] {args.sessions} sessions offered to one worker", flush=True)
        new, _sampler = measures.sessions_per_worker(stack, sessions=args.sessions)
        announce(dialect, new)
        metrics.extend(new)
    metrics.append(Metric("load_after", "machine load (1-min avg) after", os.getloadavg()[0], digits=2))


def measure_dialect(dialect: str, *, args: argparse.Namespace, metrics: list[Metric]) -> None:
    """Start a stack for `dialect`, run the measurements, append their figures to `metrics`."""
    started = time.monotonic()
    quick = args.quick
    # Other work on the machine competes for the same cores; say how busy it was.
    metrics.append(Metric("load", "machine load (1-min avg) before", os.getloadavg()[0], digits=2))
    concurrency = max(WORKER_CONCURRENCY, args.sessions + 20)  # the sessions run must not hit the pool
    with running_stack(dialect, WORKER_CONCURRENCY=str(concurrency)) as stack:
        print(f"[{dialect}] stack up: web {stack.web.url} worker pid {stack.worker_pid}", flush=True)

        def record(new: list[Metric]) -> None:
            announce(dialect, new)
            metrics.extend(new)

        record(measures.time_to_first_token(stack, runs=20 if quick else 100))
        token_metrics, token_sampler = measures.per_token_latency(stack)
        record(token_metrics)
        session_metrics, session_sampler = measures.sessions_per_worker(stack, sessions=args.sessions)
        record(session_metrics)
        record(measures.redis_connections([token_sampler, session_sampler]))
        record(matching.history_matching(stack.redis, runs=200 if quick else 1000))
        if args.streams > 0:
            record(busbar.streams_per_web_process(stack, streams=args.streams, workers=args.stream_workers))
    print(f"[{dialect}] done in {time.monotonic() - started:.0f} s", flush=True)


def measure(dialect: str, args: argparse.Namespace, metrics: list[Metric]) -> None:
    """The run the command line asked for, on `dialect`'s stack."""
    if args.soak is not None:
        measure_soak(dialect, minutes=args.soak, metrics=metrics)
    elif args.overload:
        measure_overload(dialect, quick=args.quick, metrics=metrics)
    elif args.trace:
        measure_trace(dialect, quick=args.quick, metrics=metrics)
    elif args.busbar:
        measure_busbar(dialect, args=args, metrics=metrics)
    elif args.sessions_only:
        measure_sessions(dialect, args=args, metrics=metrics)
    else:
        measure_dialect(dialect, args=args, metrics=metrics)


SETTLE_SECONDS = 15
_stopping = False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM: unwind through every `finally`, which stops the processes."""
    global _stopping
    _stopping = True
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring for the exit codes."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    # Ctrl-C reaches the children too (same process group), so a measurement may fail
    # on a dead simulator before the interrupt reaches us: the flag tells the two apart.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.agents:
        try:
            return run_agents(args)
        except KeyboardInterrupt:
            print("\ninterrupted; every process started was stopped", flush=True)
            return 130
    if args.upstream_rtt is not None:
        return run_upstream_rtt(args)
    dialects = list(DIALECTS) if args.dialect == "both" else [args.dialect]
    results: dict[str, list[Metric]] = {}
    failures: dict[str, str] = {}
    try:
        for index, dialect in enumerate(dialects):
            if index:
                # Let the previous stack's processes finish exiting before the next one is measured.
                print(f"settling {SETTLE_SECONDS} s before {dialect}", flush=True)
                time.sleep(SETTLE_SECONDS)
            metrics = results.setdefault(dialect, [])
            try:
                measure(dialect, args, metrics)
            except Exception as exc:  # one dialect failing must not hide the other's figures
                if _stopping:
                    raise KeyboardInterrupt from exc
                failures[dialect] = f"{type(exc).__name__}: {exc}"
                print(f"[{dialect}] could not be measured: {failures[dialect]}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted; every process started was stopped", flush=True)
        print(table(results, failures), flush=True)
        return 130
    print("\n" + table(results, failures), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
