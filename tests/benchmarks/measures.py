"""The four figures, each measured against a running `BenchStack`.

1. `time_to_first_token`: what the whole path (HTTP → web → Redis/RQ → worker →
   upstream → relay → SSE) adds to the first token on each surface, over the simulator's
   own time from the `send` to its first text (the upstream client run in this process on
   a warm socket), so the simulator's pace cancels out.
2. `per_token_latency`: with 100 streams at once, how long each token takes from the
   moment the simulator sends it (`[sim:stamp=N]` writes its send time into the text)
   to the moment the client reads it.
3. `sessions_per_worker`: how many long turns one worker process holds at once (220
   offered by default), and what each costs in resident memory.
4. `redis_connections`: the most Redis connections one web or worker process held
   during runs 2 and 3 (their samplers), to show the pools stay bounded.

Every measurement is bounded in count and time, warms up before it measures, and
returns `Metric`s; none of them asserts.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

from service.models import find_model
from tests.benchmarks.harness import SIM_TOKEN_DELAY, BenchStack
from tests.benchmarks.probes import Probe, Sample, Sampler, rss_kb
from tests.benchmarks.report import Metric, Target, percentile
from tests.benchmarks.streams import StreamOutcome, run_streams
from tests.benchmarks.surfaces import SURFACES
from workers.upstream import Credentials, build_client
from workers.upstream.context import TurnInput
from workers.upstream.events import TextDelta

TTFT_PROMPT = "[sim:long=5] hi"
WARMUP_PROMPT = "[sim:long=5] warm up"
MS = 1000.0
MB = 1024.0  # VmRSS is in KiB


def _ms(key: str, label: str, seconds: float, target: Target | None = None) -> Metric:
    return Metric(key, label, seconds * MS, unit="ms", target=target, digits=1)


# -- 1. added time-to-first-token ---------------------------------------------------------


def _baseline_ttft(stack: BenchStack, prompt: str) -> float:
    """Seconds from the upstream `send` to its first text: the simulator's own first token.

    The upstream client runs in this process as the worker runs it on a warm account: the
    conversation is created before the clock starts (the worker takes a spare one) and the
    account's socket is parked between runs (UPSTREAM_KEEP_SOCKETS), so what is timed is the
    turn's send and the upstream's answer, nothing the gateway saves its callers.
    """
    spec = find_model(stack.model, stack.dialect)
    assert spec is not None
    turn = TurnInput(text=prompt, tone=spec.tone, gpt4_turbo=spec.gpt4_turbo, mode=spec.mode)
    settings = stack.settings
    cookies = settings.upstream_cookies[0] if settings.upstream_cookies else ""
    client = build_client(settings, Credentials("env-1", cookies=cookies))
    handle = client.create_conversation(account="env-1")
    started = time.perf_counter()
    first = math.nan
    for event in client.stream_turn(handle, turn, should_stop=lambda: False):
        if math.isnan(first) and isinstance(event, TextDelta) and event.text:
            first = time.perf_counter() - started
    if math.isnan(first):
        raise RuntimeError("the upstream client streamed no text")
    return first


def _baseline(stack: BenchStack) -> float:
    return _baseline_ttft(stack, TTFT_PROMPT)


def time_to_first_token(stack: BenchStack, *, runs: int, warmup: int = 5) -> list[Metric]:
    """Baseline and each surface's TTFT, interleaved run by run so all see the same conditions.

    The order within a run rotates, so no side always runs on a freshly idle machine. Every
    request reads its stream to the end, so no turn is cancelled half-way. What the gateway
    adds, per surface, is its percentile minus the baseline's (issue #20: p50 ≤ 3, p99 ≤ 8 ms).
    """
    measures: dict[str, Callable[[BenchStack], float]] = {"baseline": _baseline, **SURFACES}
    names = list(measures)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + runs):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            took = measures[name](stack)
            if index >= warmup:
                seconds[name].append(took)
    p50 = {name: percentile(values, 50) for name, values in seconds.items()}
    p99 = {name: percentile(values, 99) for name, values in seconds.items()}
    metrics = [
        _ms("ttft_base_p50", f"TTFT upstream send → first text p50 (n={runs})", p50["baseline"]),
        _ms("ttft_base_p99", "TTFT upstream send → first text p99", p99["baseline"]),
        _ms("ttft_full_p50", "TTFT full path p50 (chat)", p50["chat"]),
        _ms("ttft_full_p99", "TTFT full path p99 (chat)", p99["chat"]),
    ]
    for name in SURFACES:
        suffix = "" if name == "chat" else f"_{name}"
        metrics += [
            _ms(
                f"ttft_added{suffix}_p50",
                f"TTFT added, {name} p50",
                p50[name] - p50["baseline"],
                Target("<=", 3),
            ),
            _ms(
                f"ttft_added{suffix}_p99",
                f"TTFT added, {name} p99",
                p99[name] - p99["baseline"],
                Target("<=", 8),
            ),
        ]
    for name in ("responses", "messages"):
        metrics.append(
            Metric(
                f"ttft_{name}_vs_chat_p50",
                f"TTFT {name} minus chat p50",
                (p50[name] - p50["chat"]) * MS,
                unit="ms",
                target=Target("<=", 1),
                digits=2,
            )
        )
    return metrics


# -- 2. per-token relay latency -----------------------------------------------------------


def stamped_tokens(outcomes: Sequence[StreamOutcome]) -> list[tuple[float, float]]:
    """(send time, latency) of every stamp found in the streamed content, in seconds."""
    tokens: list[tuple[float, float]] = []
    for outcome in outcomes:
        for arrived, content in outcome.contents:
            for word in content.split():
                try:
                    sent = float(word)
                except ValueError:
                    continue  # not a stamp
                tokens.append((sent, arrived - sent))
    return tokens


def all_open_window(outcomes: Sequence[StreamOutcome]) -> tuple[float, float]:
    """From the last stream's first token to the first stream's last: when all were streaming.

    Outside it, some streams are still being set up or already finishing, so the
    tokens inside it are the relay at full concurrency, without arrival bursts.
    """
    spans: list[tuple[float, float]] = []
    for outcome in outcomes:
        sent = [stamp for stamp, _ in stamped_tokens([outcome])]
        if not sent:
            return math.nan, math.nan  # a stream that never streamed: never all open
        spans.append((min(sent), max(sent)))
    return max(first for first, _ in spans), min(last for _, last in spans)


def per_token_latency(
    stack: BenchStack,
    *,
    streams: int = 100,
    stamps: int = 40,
    token_delay: float = 0.05,
    ramp: float = 1.0,
    warmup: int = 5,
) -> tuple[list[Metric], Sampler]:
    """`streams` concurrent streams of `stamps` tokens, `token_delay` apart; latency per token.

    Clients arrive evenly over `ramp` seconds rather than in one instant: a hundred turn
    set-ups in the same millisecond is not a load anyone offers, and it would measure
    the set-up burst, not the relay. Every token counts in the headline figures; the
    "all open" ones keep only tokens sent while every stream was streaming.
    """
    body = stack.chat_body(f"[sim:stamp={stamps}] go")
    stack.simulator.configure(token_delay=token_delay)
    run_streams(stack.completions_url, [body] * warmup, timeout=30, headers=stack.headers)
    probe = Probe(stack.redis, stack.settings.queue_name)
    with Sampler(probe) as sampler:
        outcomes = run_streams(
            stack.completions_url, [body] * streams, stagger=ramp / streams, timeout=60, headers=stack.headers
        )
    # Not in a `finally`: after a failure the stack is torn down, and a dead simulator
    # would only replace the real error with a connection error.
    stack.simulator.configure(token_delay=SIM_TOKEN_DELAY)
    tokens = stamped_tokens(outcomes)
    latencies = [latency for _, latency in tokens]
    opened, closed = all_open_window(outcomes)
    steady = [latency for sent, latency in tokens if opened <= sent <= closed]
    finished = sum(outcome.finished for outcome in outcomes)
    running = max((sample.running for sample in sampler.samples), default=math.nan)
    at_most_15 = Target("<=", 15)
    return [
        _ms("token_p50", f"per-token latency p50 ({streams} streams)", percentile(latencies, 50)),
        _ms("token_p99", "per-token latency p99", percentile(latencies, 99), at_most_15),
        _ms("token_max", "per-token latency max", max(latencies, default=math.nan)),
        Metric("token_count", "tokens measured", len(latencies), unit=f"of {streams * stamps}", digits=0),
        Metric("token_streams", "streams finished", finished, unit=f"of {streams}", digits=0),
        Metric("token_running", "peak turns running", running, digits=0),
        _ms("token_steady_p50", "per-token p50, all streams open", percentile(steady, 50)),
        _ms("token_steady_p99", "per-token p99, all streams open", percentile(steady, 99)),
        Metric("token_steady_count", "tokens sent with all streams open", len(steady), digits=0),
    ], sampler


# -- 3. sessions held by one worker process -----------------------------------------------


SESSIONS = 220  # offered: issue #20 asks for >= 200 held by one worker, so offer a few more


def sessions_per_worker(
    stack: BenchStack, *, sessions: int = SESSIONS, words: int = 60, pace: float = 0.2, warmup: int = 5
) -> tuple[list[Metric], Sampler]:
    """`sessions` long turns at once against a fresh worker; peak running turns and RSS.

    The worker is restarted first so its idle memory is not already grown by earlier
    runs; a few short turns then load every module a turn needs before idle is read.
    The stack's WORKER_CONCURRENCY must be at least `sessions`, or the peak is the pool's.
    """
    stack.restart_worker()
    run_streams(
        stack.completions_url, [stack.chat_body(WARMUP_PROMPT)] * warmup, timeout=30, headers=stack.headers
    )
    time.sleep(0.5)
    pid = stack.worker_pid
    idle = rss_kb(pid) or 0
    body = stack.chat_body(f"[sim:slow={pace:g}][sim:long={words}] go")
    probe = Probe(stack.redis, stack.settings.queue_name, worker_pid=pid, simulator=stack.simulator)
    with Sampler(probe) as sampler:
        outcomes = run_streams(
            stack.completions_url,
            [body] * sessions,
            stagger=1.0 / sessions,
            timeout=words * pace + 60,
            headers=stack.headers,
        )
    samples = sampler.samples
    busiest = max(samples, key=lambda s: (s.running, s.worker_rss_kb or 0), default=None)
    peak = busiest.running if busiest else 0
    at_peak = (busiest.worker_rss_kb or 0) if busiest else 0
    rss_peak = max((s.worker_rss_kb or 0 for s in samples), default=0)
    sockets = max((s.open_sockets or 0 for s in samples), default=math.nan)
    finished = sum(outcome.finished for outcome in outcomes)
    per_session = (at_peak - idle) / MB / peak if peak else math.nan
    marginal = marginal_rss(samples, until=busiest.at if busiest else 0.0)
    at_most = Target("<=", 0.1)
    return [
        Metric("sessions_peak", "peak sessions in one worker", peak, target=Target(">=", 200), digits=0),
        Metric("sessions_sockets", "peak upstream sockets open", sockets, digits=0),
        Metric("sessions_done", "sessions finished", finished, unit=f"of {sessions}", digits=0),
        Metric("rss_idle", "worker RSS idle", idle / MB, unit="MB"),
        Metric("rss_peak", "worker RSS peak", rss_peak / MB, unit="MB"),
        Metric("rss_per_session", "worker RSS per session", per_session, unit="MB", target=at_most, digits=2),
        Metric("rss_marginal", "worker RSS per added session (slope)", marginal, unit="MB", digits=2),
    ], sampler


def marginal_rss(samples: Sequence[Sample], *, until: float) -> float:
    """MB of worker RSS per added running turn: the least-squares slope while the load ramps up.

    "RSS per session" divides all growth since idle by the peak, so it also charges the
    sessions with what the process grows once whatever its count (the thread pool, libcurl's
    per-thread handles and connection caches); the slope leaves that out. Both are shown.
    """
    ramp = [s for s in samples if s.at <= until and s.worker_rss_kb and s.running]
    if len({s.running for s in ramp}) < 2:
        return math.nan
    slope, _ = statistics.linear_regression([s.running for s in ramp], [s.worker_rss_kb or 0 for s in ramp])
    return slope / MB


# -- 4. Redis connections per process -----------------------------------------------------


def redis_connections(samplers: Sequence[Sampler]) -> list[Metric]:
    """The peak connections of any one web and any one worker process across `samplers`."""
    web = max((s.peak_connections("web") for s in samplers), default=0)
    worker = max((s.peak_connections("worker") for s in samplers), default=0)
    at_most_20 = Target("<=", 20)
    return [
        Metric("redis_web", "Redis connections, web process", web, target=at_most_20, digits=0),
        Metric("redis_worker", "Redis connections, worker process", worker, target=at_most_20, digits=0),
    ]
