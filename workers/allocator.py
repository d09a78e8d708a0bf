"""glibc malloc tuned for a worker holding hundreds of upstream sockets at once.

Measured with the browser transport (curl_cffi) and 100–200 concurrent turns, glibc's
defaults cost ~0.3 MB of resident memory per session where the plain transport costs
~0.04 MB. The bytes are not in use; they are how they were allocated:

- each live websocket holds large, mostly empty buffers: libcurl's 64 KiB websocket chunks
  (`calloc`), and before `workers.upstream.curl_socket` shared it, curl_cffi's 128 KiB
  receive buffer (`ffi.new`, i.e. `calloc`).
  glibc raises its mmap threshold each time such a block is freed, so after the first
  turns they come from the heap, where `calloc` must zero recycled memory and every page
  becomes resident. A fixed threshold (M_MMAP_THRESHOLD) keeps them in their own
  mappings, fresh from the kernel, where only the pages written to count: a few KiB of
  frames instead of ~320 KiB per socket. Fixing it also ends the dynamic adjustment.
- libcurl calls run in the hub's thread pool (`cooperative.offload`), and glibc gives
  each thread its own arena (up to 8 per core): handles created in one thread and freed
  in another leave every arena partly full. Two arenas (M_ARENA_MAX) are enough for a
  process whose threads mostly wait on the network.

`tune()` is called by the worker's entry point first, before gevent starts threads (it
imports only ctypes); it does nothing outside glibc, and an operator's own
MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ (read by glibc at exec) win over it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3  # <malloc.h>
M_ARENA_MAX = -8
MMAP_THRESHOLD = 64 * 1024  # libcurl's websocket chunks (64 KiB - 1 + header) land just above it
ARENA_MAX = 2

_SETTINGS = (
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
)


def tune(environ: Mapping[str, str]) -> dict[str, int]:
    """Apply the worker's malloc settings; returns those applied (empty outside glibc)."""
    libc = _glibc()
    if libc is None:
        return {}
    applied: dict[str, int] = {}
    for variable, option, value in _SETTINGS:
        if environ.get(variable):
            continue  # the operator chose; glibc already read it
        if libc.mallopt(option, value) == 1:  # mallopt returns 1 on success
            applied[variable] = value
    return applied


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (musl and others have no `mallopt` options to tune)."""
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them; nothing is loaded
        libc.gnu_get_libc_version  # noqa: B018  # glibc-only symbol: raises AttributeError elsewhere
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc
