"""Many concurrent streamed chat completions from one event loop, timestamped on arrival.

The per-token figure is a receive time minus a send time, so the clients must add as
little delay of their own as possible. A hundred client threads in one CPython process
would queue behind each other for the GIL (switching every 5 ms by default), and that
wait would show up in the very p99 being measured; one asyncio loop reading raw
HTTP/1.1 from a hundred sockets takes each frame's time the moment its bytes are read.

The client speaks just enough HTTP: a POST with a JSON body, the status line, and a
body that is either chunked (gunicorn streams that way) or delimited by the close.
SSE frames are split on blank lines; `data:` payloads are JSON except `[DONE]`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit


@dataclasses.dataclass
class StreamOutcome:
    """What one streamed completion delivered, and when."""

    status: int = 0
    done: bool = False
    """The stream ended with `data: [DONE]`."""
    error: str = ""
    """Why it failed: an HTTP status, an error frame, a timeout or a socket error."""
    contents: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    """(arrival `time.time()`, `delta.content`) of every non-empty content chunk."""
    sent: float = 0.0
    """`time.time()` when the request was written."""
    ended: float = 0.0
    """`time.time()` when the stream ended (or failed)."""
    retry_after: float | None = None
    """The `Retry-After` header of a non-200 answer, in seconds."""
    queued: int = 0
    """How many `: queued, position N` comments the stream carried while waiting for an account."""

    @property
    def finished(self) -> bool:
        """The completion streamed to its end without an error."""
        return self.done and not self.error


class _SseReader:
    """Splits a byte stream into SSE frames and records content chunks on an outcome."""

    def __init__(self, outcome: StreamOutcome) -> None:
        self._outcome = outcome
        self._buffer = b""

    def feed(self, data: bytes, arrived: float) -> None:
        self._buffer += data
        *frames, self._buffer = self._buffer.split(b"\n\n")
        for raw in frames:
            for line in raw.split(b"\n"):
                if line.startswith(b"data: "):
                    self._data(line[6:], arrived)
                elif line.startswith(b":") and b"queued" in line:
                    self._outcome.queued += 1

    def _data(self, payload: bytes, arrived: float) -> None:
        if payload == b"[DONE]":
            self._outcome.done = True
            return
        chunk: dict[str, Any] = json.loads(payload)
        if "error" in chunk:
            self._outcome.error = str((chunk["error"] or {}).get("message", chunk["error"]))
            return
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                self._outcome.contents.append((arrived, content))


def _request(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"{extra}"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return parts.hostname or "127.0.0.1", parts.port or 80, head.encode() + payload


async def stream_completion(
    url: str, body: dict[str, Any], *, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> StreamOutcome:
    """POST one streamed completion (with extra `headers`) and read it to the end (or `timeout` s)."""
    outcome = StreamOutcome()
    host, port, request = _request(url, body, headers)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=2**20)
            outcome.sent = time.time()
            writer.write(request)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            outcome.status = int(head.split(" ", 2)[1])
            outcome.retry_after = _retry_after(head)
            if outcome.status != 200:
                outcome.error = f"HTTP {outcome.status}: {(await reader.read())[:200]!r}"
                return outcome
            sse = _SseReader(outcome)
            if "transfer-encoding: chunked" in head:
                while size := int((await reader.readline()).split(b";")[0], 16):
                    data = await reader.readexactly(size + 2)
                    sse.feed(data[:-2], time.time())
            else:
                while data := await reader.read(65536):
                    sse.feed(data, time.time())
    except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
        outcome.error = outcome.error or f"{type(exc).__name__}: {exc}"
    finally:
        outcome.ended = time.time()
        if writer is not None:
            writer.close()
    return outcome


def _retry_after(head: str) -> float | None:
    """The `Retry-After` seconds of a (lower-cased) response head, if it has a numeric one."""
    for line in head.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip() == "retry-after":
            try:
                return float(value.strip())
            except ValueError:
                return None
    return None


async def _stream_many(
    url: str,
    bodies: Sequence[dict[str, Any]],
    stagger: float,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> list[StreamOutcome]:
    async def one(index: int, body: dict[str, Any]) -> StreamOutcome:
        await asyncio.sleep(index * stagger)
        return await stream_completion(url, body, timeout=timeout, headers=headers)

    return list(await asyncio.gather(*(one(i, body) for i, body in enumerate(bodies))))


def run_streams(
    url: str,
    bodies: Sequence[dict[str, Any]],
    *,
    stagger: float = 0.0,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> list[StreamOutcome]:
    """Stream every body at once (the i-th starting `i * stagger` s in, each with `headers`);
    outcomes in order. Each stream is bounded by `timeout`, so the call always returns.
    """
    return asyncio.run(_stream_many(url, bodies, stagger, timeout, headers))
