"""The "Overload" benchmark (issue 8): more demand than the upstream accounts can serve.

Three accounts at the gateway's pool defaults (`ACCOUNT_MAX_CONCURRENT=2`,
`ACCOUNT_RPM=12`: a capacity of 3 × 12 = 36 turns a minute), four API keys, and 200
streaming clients arriving over 20 s, one key sending 70 % of them. The simulator
enforces what the real service tolerates per account (B5a: 4 in flight, 15 a minute)
and counts every turn it refused. Each client streams one ~3 s turn; a client answered
429 waits exactly its `Retry-After` and asks again, until the run's deadline.

What is reported, and where it comes from:

- upstream overload errors — the simulator's per-account rejections (target 0);
- completed turns per minute after the first minute (the accounts' initial allowance
  would flatter it) against the pool's capacity (target ≥ 95 % of 36);
- the largest in-flight count any account saw — the simulator's (target ≤ 2);
- each key's completed turns while every key still wanted more, against its max-min fair
  share of them (target: every key within 20 %);
- `Retry-After` accuracy — of the retries made after waiting exactly that long, how many
  were admitted rather than answered 429 again (target ≥ 90 %);
- p50 / p99 queue wait: from the request to its first token, over completed turns.

Against a gateway without the account pool the figures are still printed: they show the
overload it lets through.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tests.benchmarks.harness import BenchStack
from tests.benchmarks.report import Metric, Target, percentile
from tests.benchmarks.streams import StreamOutcome, stream_completion

ACCOUNTS = ("acct-1", "acct-2", "acct-3")
KEYS = ("bench-key-a", "bench-key-b", "bench-key-c", "bench-key-d")
ACCOUNT_MAX_CONCURRENT = 2
ACCOUNT_RPM = 12
SIM_MAX_CONCURRENT = 4  # B5a
SIM_RPM = 15  # B5a
PROMPT = "[sim:slow=0.1][sim:long=30] go"
"""About 3 s of streaming: 30 words, 0.1 s apart (B5a: a short answer takes ~3.5 s)."""
ATTEMPT_TIMEOUT = 120.0
"""One request's bound: a queued turn waits at most QUEUE_MAX_WAIT_SECONDS (30) plus its answer."""
WARM_WINDOW = 60.0
"""Throughput is counted from this long after the start: before it, each account spends its allowance."""

ENV = {
    "UPSTREAM_COOKIES": "\n".join(f"_U={account}; MUID=m{index}" for index, account in enumerate(ACCOUNTS)),
    "API_KEYS": ",".join(KEYS),
    "ACCOUNT_MAX_CONCURRENT": str(ACCOUNT_MAX_CONCURRENT),
    "ACCOUNT_RPM": str(ACCOUNT_RPM),
    # Refused turns are the point of this run; the worker's tracebacks would bury the figures.
    "LOG_LEVEL": "CRITICAL",
}
"""The gateway's environment for this run (settings a gateway without the pool ignores)."""


@dataclasses.dataclass
class Client:
    """One simulated user: its key, when it arrives, and every attempt it made."""

    key: str
    arrives: float
    attempts: list[StreamOutcome] = dataclasses.field(default_factory=list)
    waited: list[float] = dataclasses.field(default_factory=list)
    """Seconds slept before each retry (the previous answer's Retry-After)."""

    @property
    def completed(self) -> StreamOutcome | None:
        """The attempt that streamed a whole turn, if any."""
        return next((attempt for attempt in self.attempts if attempt.finished), None)

    @property
    def done_at(self) -> float:
        """When the client stopped wanting a turn (completed, failed or gave up)."""
        return self.attempts[-1].ended if self.attempts else math.inf


def key_of(index: int) -> str:
    """70 % of clients on the first key, the rest spread over the other three, interleaved."""
    slot = index % 10
    return KEYS[0] if slot < 7 else KEYS[slot - 6]


async def _run_client(stack: BenchStack, client: Client, start: float, deadline: float) -> None:
    await asyncio.sleep(max(0.0, start + client.arrives - time.time()))
    body = stack.chat_body(PROMPT)
    headers = {"Authorization": f"Bearer {client.key}"}
    while True:
        outcome = await stream_completion(
            stack.completions_url, body, timeout=ATTEMPT_TIMEOUT, headers=headers
        )
        client.attempts.append(outcome)
        wait = outcome.retry_after
        if outcome.status != 429 or wait is None or time.time() + wait > deadline:
            return
        client.waited.append(wait)
        await asyncio.sleep(wait)


async def _run_all(stack: BenchStack, clients: Sequence[Client], start: float, deadline: float) -> None:
    await asyncio.gather(*(_run_client(stack, client, start, deadline) for client in clients))


def fair_shares(total: float, demands: Mapping[str, float]) -> dict[str, float]:
    """Max-min fair split of `total` among `demands` (water-filling: nobody gets more than it asked)."""
    shares = {key: 0.0 for key in demands}
    active = {key for key, demand in demands.items() if demand > 0}
    remaining = float(total)
    while active and remaining > 1e-9:
        each = remaining / len(active)
        capped = {key for key in active if demands[key] - shares[key] <= each}
        if not capped:
            for key in active:
                shares[key] += each
            break
        for key in capped:
            remaining -= demands[key] - shares[key]
            shares[key] = demands[key]
        active -= capped
    return shares


def fairness(clients: Sequence[Client], window: tuple[float, float]) -> dict[str, tuple[int, float]]:
    """Per key: (turns completed inside `window`, its fair share of all turns completed there)."""
    begin, end = window
    done: collections.Counter[str] = collections.Counter()
    demand: collections.Counter[str] = collections.Counter()
    for client in clients:
        finished = client.completed
        if client.done_at > begin:
            demand[client.key] += 1  # still wanted its turn when the window opened
        if finished is not None and begin <= finished.ended <= end:
            done[client.key] += 1
    shares = fair_shares(sum(done.values()), {key: float(demand[key]) for key in KEYS})
    return {key: (done[key], shares[key]) for key in KEYS}


def measure(
    stack: BenchStack, *, clients: int = 200, ramp: float = 20.0, run_seconds: float = 240.0
) -> list[Metric]:
    """Run the overload for `run_seconds` after the first arrival; return its figures."""
    simulator = stack.simulator
    simulator.reset()
    simulator.configure_limits(max_concurrent=SIM_MAX_CONCURRENT, rpm=SIM_RPM)
    users = [Client(key_of(index), ramp * index / clients) for index in range(clients)]
    start = time.time() + 0.5
    deadline = start + run_seconds
    asyncio.run(_run_all(stack, users, start, deadline))
    accounts = simulator.accounts()
    simulator.configure_limits(max_concurrent=0, rpm=0)
    return _figures(users, accounts, start=start, deadline=deadline, clients=clients)


def _figures(
    users: Sequence[Client],
    accounts: Mapping[str, dict[str, Any]],
    *,
    start: float,
    deadline: float,
    clients: int,
) -> list[Metric]:
    ours = [accounts.get(name, {}) for name in ACCOUNTS]
    rejected = sum(sum((view.get("rejections") or {}).values()) for view in ours)
    in_flight = max((int(view.get("max_in_flight") or 0) for view in ours), default=0)

    completed = [client.completed for client in users if client.completed is not None]
    ends = sorted(outcome.ended for outcome in completed)
    last = min(deadline, ends[-1]) if ends else math.nan
    warm = start + WARM_WINDOW
    counted = [end for end in ends if warm <= end <= last]
    per_minute = len(counted) / (last - warm) * 60 if ends and last - warm >= 30 else math.nan
    capacity = len(ACCOUNTS) * ACCOUNT_RPM

    # Contended: from the first arrival until some key wants nothing more (keys arrive
    # interleaved in their proportions, so the ramp does not favour any of them).
    contended_end = min([deadline, *(max(c.done_at for c in users if c.key == key) for key in KEYS)])
    shares = fairness(users, (start, contended_end))
    deviations = [abs(done / share - 1) * 100 for done, share in shares.values() if share > 0]
    worst = max(deviations) if deviations else math.nan

    retries = [
        client.attempts[index + 1].status != 429 for client in users for index in range(len(client.waited))
    ]
    accuracy = sum(retries) / len(retries) * 100 if retries else math.nan
    waits = [outcome.contents[0][0] - outcome.sent for outcome in completed if outcome.contents]
    answers_429 = sum(attempt.status == 429 for client in users for attempt in client.attempts)
    failed = [client.attempts[-1] for client in users if client.completed is None and client.attempts]
    queued = sum(any(attempt.queued for attempt in client.attempts) for client in users)
    _print_failures(failed)

    metrics = [
        Metric("ovl_upstream_errors", "upstream overload errors", rejected, target=Target("<=", 0), digits=0),
        Metric(
            "ovl_turns_per_min",
            f"completed turns/min after {WARM_WINDOW:g} s",
            per_minute,
            unit=f"of {capacity}",
            target=Target(">=", 0.95 * capacity),
        ),
        Metric(
            "ovl_max_in_flight",
            "largest in-flight count, one account",
            in_flight,
            target=Target("<=", 2),
            digits=0,
        ),
        Metric("ovl_fair_worst", "worst key off its fair share", worst, unit="%", target=Target("<=", 20)),
    ]
    for key, (done, share) in shares.items():
        metrics.append(Metric(f"ovl_share_{key}", f"  {key}: turns (fair share {share:.1f})", done, digits=0))
    metrics += [
        Metric(
            "ovl_retry_after",
            f"retries admitted after Retry-After (n={len(retries)})",
            accuracy,
            unit="%",
            target=Target(">=", 90),
        ),
        Metric("ovl_wait_p50", "queue wait p50 (to first token)", percentile(waits, 50), unit="s", digits=2),
        Metric("ovl_wait_p99", "queue wait p99 (to first token)", percentile(waits, 99), unit="s", digits=2),
        Metric("ovl_completed", "turns completed", len(completed), unit=f"of {clients}", digits=0),
        Metric("ovl_429", "429 answers (with retries)", answers_429, digits=0),
        Metric("ovl_failed", "clients failed otherwise", len(failed), digits=0),
        Metric("ovl_queued", "clients shown a queue position", queued, digits=0),
    ]
    return metrics


def _print_failures(failed: Sequence[StreamOutcome]) -> None:
    """The commonest reasons clients failed, so a bad figure explains itself."""
    reasons = collections.Counter((attempt.error or f"HTTP {attempt.status}")[:120] for attempt in failed)
    for reason, count in reasons.most_common(3):
        print(f"  overload: {count} client(s) failed with: {reason}", flush=True)
