"""A per-turn trace: when each phase on the way to the first token ended, and how many Redis
round trips it took, on each side (web and worker).

Why: time to first token is the sum of small serial costs (admission, the key's quota,
the enqueue, the dequeue, the account's grant, the upstream's `send`); a trace of one
request shows which phase costs what, so the next cut is obvious (`deploy/bench --trace`).

A trace lives in a context variable (per greenlet under gevent), so marks and round trips
of concurrent requests never mix. Every Redis client built by `redis_conn.connect` counts
what it sends (`counting`): one `send_packed_command` is one round trip (a pipeline packs
all its commands into one). Counting costs a context-variable read per command; marks and
the saved trace exist only for a turn that asked for one (`TRACE_REQUESTS=1` and the
`X-Gateway-Trace: 1` header), which is how the benchmark and the round-trip test read them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from redis import Redis
from redis.connection import AbstractConnection

T = TypeVar("T")

HEADER = "X-Gateway-Trace"
NAMED_BYTES = 65536
UNKEPT_NAMED = 4  # a larger send is counted, not parsed for its command names
TTL_SECONDS = 600

_current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("gateway_trace", default=None)


@dataclasses.dataclass
class Trace:
    """One side's phases of one turn: (phase, wall time, Redis round trips so far)."""

    side: str
    marks: list[tuple[str, float, int]] = dataclasses.field(default_factory=list)
    round_trips: int = 0
    overlapped: int = 0  # sends whose reply nobody waits for before the next one (not on the path)
    # Each round trip's packed send ("~" first if overlapped), named only when saved: naming
    # splits every byte of the send, which on the path would inflate the phase it measures.
    commands: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    overlapping: bool = False  # sends now are `overlapped`
    keep: bool = False  # False: a counter only (the worker counts every dequeue, keeps a traced one's)
    cpu: list[float] = dataclasses.field(default_factory=list)  # the thread's CPU seconds at each mark

    def mark(self, phase: str, at: float | None = None) -> None:
        """Note that `phase` ended now (or at `at`), and the CPU time of this thread (all its
        greenlets) by then: on a shared machine wall time is partly others', CPU time is ours."""
        self.marks.append((phase, time.time() if at is None else at, self.round_trips))
        self.cpu.append(time.thread_time())

    def to_json(self) -> str:
        """The saved form: the side, its marks and its round trips."""
        return json.dumps(
            {
                "side": self.side,
                "round_trips": self.round_trips,
                "marks": self.marks,
                "commands": [prefix + _names(packed) for prefix, packed in self.commands],
                "cpu": self.cpu,
            }
        )


def start(side: str, *, keep: bool = True) -> Trace:
    """Begin a trace in the current context (greenlet) and return it."""
    trace = Trace(side, keep=keep)
    _current.set(trace)
    return trace


def adopt(trace: Trace | None) -> None:
    """Make `trace` the current context's (a job's greenlet takes its dequeuer's)."""
    _current.set(trace)


def current() -> Trace | None:
    """The trace of the current context, if any."""
    return _current.get()


def mark(phase: str) -> None:
    """Mark `phase` in the current trace, if one is kept (a no-op otherwise)."""
    trace = _current.get()
    if trace is not None and trace.keep:
        trace.mark(phase)


@contextlib.contextmanager
def overlapped() -> Iterator[None]:
    """Sends inside are not waited for before the next round trip: count them apart."""
    trace = _current.get()
    if trace is None:
        yield
        return
    trace.overlapping = True
    try:
        yield
    finally:
        trace.overlapping = False


def stop() -> Trace | None:
    """End the current context's trace and return it."""
    trace = _current.get()
    _current.set(None)
    return trace


def key(completion_id: str) -> str:
    """The hash holding a traced turn's sides."""
    return f"trace:{completion_id}"


def save(redis: Redis, completion_id: str, trace: Trace | None) -> None:
    """Store a kept trace under its turn (never raises: a trace must not fail a turn)."""
    if trace is None or not trace.keep:
        return
    payload = trace.to_json()  # taken first: the save's own round trip is not the turn's
    try:
        with redis.pipeline(transaction=False) as pipe:
            pipe.hset(key(completion_id), trace.side, payload)
            pipe.expire(key(completion_id), TTL_SECONDS)
            pipe.execute()
    except Exception:
        pass


def load(redis: Redis, completion_id: str) -> dict[str, Any]:
    """The saved sides of a traced turn: {"web": {...}, "worker": {...}}."""
    raw: dict[bytes, bytes] = redis.hgetall(key(completion_id))  # type: ignore[assignment]
    return {side.decode(): json.loads(value) for side, value in raw.items()}


_counting_classes: dict[type, type] = {}


def counting(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """`cls` with every send counted as a round trip of the current trace."""
    known = _counting_classes.get(cls)
    if known is not None:
        return known

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        trace = _current.get()
        if trace is not None:
            # Named only for a kept trace (and a worker's first few, before its job says whether it is).
            named = trace.keep or len(trace.commands) < UNKEPT_NAMED
            if trace.overlapping:
                trace.overlapped += 1
                if named:
                    trace.commands.append(("~", command))
            else:
                trace.round_trips += 1
                if named:
                    trace.commands.append(("", command))
        cls.send_packed_command(self, command, check_health)  # type: ignore[no-untyped-call]  # redis-py

    made = type(f"Counting{cls.__name__}", (cls,), {"send_packed_command": send_packed_command})
    _counting_classes[cls] = made
    return made


def untraced(function: Callable[[], T]) -> Callable[[], T]:
    """`function` run without the caller's trace (a background watcher is not on the turn's path)."""

    def run() -> T:
        _current.set(None)
        return function()

    return run


def _names(packed: Any) -> str:
    """The first commands of a packed send, e.g. `EVALSHA` or `MULTI HSET` (for the trace)."""
    chunks = packed if isinstance(packed, list | tuple) else [packed]
    if sum(len(chunk) for chunk in chunks) > NAMED_BYTES:
        return "(large)"
    parts = b"".join(bytes(chunk) for chunk in chunks).split(b"\r\n")
    names = [parts[i + 2] for i, part in enumerate(parts[:-2]) if part.startswith(b"*")]
    return " ".join(name.decode("ascii", "replace") for name in names[:3])
