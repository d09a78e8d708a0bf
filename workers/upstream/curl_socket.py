"""A curl_cffi websocket that costs a parked or streaming session as little memory as it can.

A worker holds hundreds of upstream websockets at once (issue #20: ≥ 200 sessions per
worker at ≤ 0.1 MB each), so what curl_cffi keeps per socket adds up. Two of its
allocations are per socket only by default, and this module makes them per process:

- **The receive buffer.** `Curl.ws_recv` reads each frame into a 128 KiB `char[]` the
  handle keeps for its whole life. The bytes are copied out (`bytes`) before the call
  returns and the call never yields to another greenlet, so one buffer per thread that is
  reading at that moment serves every socket: `SharedBufferCurl` borrows one from a small
  pool for the length of the C call. Each private buffer was a 132 KiB mapping with at least
  its first page resident (more after a large frame).
- **The two selectors.** `WebSocket` builds a read and a write `DefaultSelector` per socket
  (under gevent, two `GeventSelector`s with their maps and keys) to wait on when libcurl
  says EAGAIN. The browser transport never lets `recv` wait (it polls with `timeout=0` and
  waits itself), and `send` only waits when the kernel's buffer is full; `SocketWait` gives
  it the one call it needs, `select(timeout)`, as a cooperative wait on the socket.

Nothing else changes: the same libcurl calls, the same frames on the wire, the same errors
(`_check_error` is curl_cffi's own). The private attributes touched here are those of the
pinned curl_cffi (requirements.txt); `tests/unit/test_curl_socket.py` checks they still exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from curl_cffi.const import CurlInfo
from curl_cffi.curl import Curl, ffi, lib  # the cffi module `Curl` itself calls
from curl_cffi.requests import WebSocket

from workers.upstream.cooperative import wait_readable, wait_writable

if TYPE_CHECKING:
    from curl_cffi.curl import CurlWsFrame

RECV_BUFFER = 128 * 1024  # curl_cffi's own size (Curl._WS_RECV_BUFFER_SIZE): frames are read as before
_BUFFERS: list[Any] = []
"""Idle receive buffers; one is taken for each `ws_recv` call in flight (one per thread at most)."""


class SharedBufferCurl(Curl):
    """A `Curl` whose websocket reads borrow a process-wide buffer instead of owning 128 KiB each."""

    def ws_recv(self) -> tuple[bytes, CurlWsFrame]:
        """As `Curl.ws_recv`: one piece of a frame and its meta; raises `CurlError` on failure."""
        handle = cast(Any, self)._curl
        if handle is None:
            return super().ws_recv()  # curl_cffi's own error for a closed handle
        try:
            buffer = _BUFFERS.pop()  # list.pop/append are atomic under the GIL: no two callers share one
        except IndexError:
            buffer = ffi.new("char[]", RECV_BUFFER)
        try:
            received, frame = cast(Any, self)._ws_recv_n_recv, cast(Any, self)._ws_recv_p_frame
            code = lib.curl_ws_recv(handle, buffer, RECV_BUFFER, received, frame)
            if code:
                cast(Any, self)._check_error(code, "WS_RECV")
            return ffi.buffer(buffer)[: received[0]], frame[0]
        finally:
            _BUFFERS.append(buffer)


class SocketWait:
    """What `WebSocket` asks of a selector (`select(timeout)`, `close()`), as a cooperative wait."""

    __slots__ = ("_fd", "_wait")

    def __init__(self, fd: int, wait: Callable[[int, float], bool]) -> None:
        self._fd = fd
        self._wait = wait

    def select(self, timeout: float | None = None) -> bool:
        """Whether the socket became ready within `timeout` seconds (None: a minute, then again)."""
        while True:
            ready = self._wait(self._fd, 60.0 if timeout is None else timeout)
            if ready or timeout is not None:
                return ready

    def close(self) -> None:
        """Nothing to release: no selector was opened."""


def lean_websocket() -> WebSocket:
    """A `WebSocket` on a `SharedBufferCurl`; call `settle` once it is connected."""
    return WebSocket(cast(Any, SharedBufferCurl()), skip_utf8_validation=True)


def settle(ws: WebSocket) -> int:
    """Give a connected `ws` cooperative waits instead of its two selectors; returns its socket."""
    fd = int(cast(Any, ws.curl.getinfo(CurlInfo.ACTIVESOCKET)))
    # curl_cffi builds its selectors on first use unless these are set (`_get_sock_fd`).
    state = cast(Any, ws)
    state._sock_fd = fd
    state._read_selector = SocketWait(fd, wait_readable)
    state._write_selector = SocketWait(fd, wait_writable)
    return fd
