"""The web process's CPU per delta on the relay → SSE path alone, in one process.

`python -m tests.benchmarks.relay_path [TREE] [--streams N] [--deltas D]`

The Busbar figure (`busbar.py`) is the whole web process — request set-up, admission,
gunicorn — on a machine the simulator, the workers and the client share, so a change to
the per-delta path moves it less than its noise. This isolates that path: gevent-patched
like the web process, one `RelayHub`, `watch`, `RenderStream` with the chat renderer, and
each frame encoded as werkzeug encodes it; a child process publishes the relay messages
(its CPU is not counted). `TREE` runs another checkout's code (e.g. main's, exported with
`git archive`) with the same harness, for a before/after on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

PUBLISH = """
import json, sys, time
from redis import Redis
url, streams, deltas, spread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
r = Redis.from_url(url)
slots = 20 if spread else 1  # spread: a round's deltas in 1 ms slices over 20 ms, as paced streams send them
start = time.monotonic()
for i in range(deltas + 1):
    for slot in range(slots):
        p = r.pipeline(transaction=False)
        for s in range(slot, streams, slots):
            done = {"type": "done", "text": "x", "finish_reason": "stop", "seq": i}
            delta = {"type": "delta", "text": f"t{i} ", "seq": i}
            p.publish(f"relay:c{s}", json.dumps(done if i == deltas else delta))
        p.execute()
        if spread:
            time.sleep(max(0.0, start + (i * slots + slot + 1) * 0.001 - time.monotonic()))
    if not spread:
        time.sleep(0.004)
"""

SINK = """
import selectors, socket, sys
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
expected, seen, open_ = int(sys.argv[1]), 0, 0
selector = selectors.DefaultSelector()
selector.register(server, selectors.EVENT_READ)
while seen < expected or open_:
    for key, _ in selector.select():
        if key.fileobj is server:
            conn, _ = server.accept()
            selector.register(conn, selectors.EVENT_READ)
            seen, open_ = seen + 1, open_ + 1
        elif not key.fileobj.recv(65536):
            selector.unregister(key.fileobj)
            key.fileobj.close()
            open_ -= 1
"""


@contextlib.contextmanager
def sink(streams: int) -> Iterator[int]:
    """A client stand-in in its own process that reads and drops what `streams` connections send."""
    process = subprocess.Popen([sys.executable, "-c", SINK, str(streams)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.wait(30)


def measure(streams: int, deltas: int, spread: bool = False, send: bool = False) -> tuple[float, int]:
    """(CPU seconds per delta, SSE bytes written) for `streams` streams of `deltas` deltas.

    By default each round of deltas (one per stream) is published in one pipeline, 4 ms
    apart: the web side reads them in batches. `spread` publishes a round over 20 ms
    (Busbar's pace) in 1 ms slices, as many paced streams' deltas reach the web tier.
    `send` writes every item as gunicorn does (a chunk, `sendall`) to a reading process,
    so the socket writes — a syscall per write — are counted too.
    """
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(sink(streams)) if send else None
        return _measure(streams, deltas, spread, port)


def _measure(streams: int, deltas: int, spread: bool, port: int | None) -> tuple[float, int]:
    import socket

    import gevent
    from gunicorn.util import write_chunk  # type: ignore[import-untyped]  # no stubs
    from redis import Redis

    from service.runtime.embedded_redis import EmbeddedRedis
    from service.state.relay_hub import RelayHub
    from service.turns import TurnRequest, lease_key
    from service.web.chat.render import ChatRenderer
    from service.web.pipeline import stream as stream_module
    from service.web.pipeline.watch import watch

    Body = getattr(stream_module, "EncodedStream", stream_module.RenderStream)  # what the response iterates
    settings: Any = argparse.Namespace(sse_heartbeat_seconds=15.0, queue_wait_timeout=30.0)
    written = 0
    with EmbeddedRedis() as server:
        redis = Redis.from_url(server.url)
        hub = RelayHub(redis)
        for s in range(streams):
            redis.set(lease_key(f"c{s}"), "1", ex=600)  # a live worker, as far as `watch` can tell

        def consume(s: int) -> None:
            nonlocal written
            sub = hub.subscribe(f"c{s}")
            turn = TurnRequest(completion_id=f"c{s}", conversation_id="c", owner="o", model="m", prompt="p")
            renderer = ChatRenderer(turn, [{"role": "user", "content": "p"}], include_usage=False)
            events = watch(sub, redis, f"c{s}", settings)
            extra: dict[str, Any] = {"ready": sub.ready} if hasattr(sub, "ready") else {}  # an older tree
            body = Body(
                renderer, events, None, on_close=lambda _: sub.close(), position=lambda: sub.position, **extra
            )
            client = socket.create_connection(("127.0.0.1", port)) if port is not None else None
            for item in body:  # bytes, or an older tree's str (werkzeug encoded those)
                data = item if isinstance(item, bytes) else item.encode()
                written += len(data)
                if client is not None:
                    write_chunk(client, data)
            if client is not None:
                client.close()

        consumers = [gevent.spawn(consume, s) for s in range(streams)]
        gevent.sleep(0.5)  # every subscription confirmed
        cpu = time.process_time()
        publisher = subprocess.Popen(
            [sys.executable, "-c", PUBLISH, server.url, str(streams), str(deltas), str(int(spread))]
        )
        gevent.joinall(consumers)
        cpu = time.process_time() - cpu
        publisher.wait()
        hub.close()
    return cpu / (streams * deltas), written


def main(argv: list[str] | None = None) -> None:
    """Patch like the web process, then measure and print one line."""
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.relay_path", description=__doc__)
    parser.add_argument("tree", nargs="?", help="a checkout whose service/ to measure instead of this one")
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--deltas", type=int, default=300)
    parser.add_argument("--spread", action="store_true", help="publish a round over 20 ms in 1 ms slices")
    parser.add_argument("--send", action="store_true", help="write every item to a socket, as gunicorn does")
    args = parser.parse_args(argv)
    from gevent import monkey

    monkey.patch_all()
    if args.tree:
        sys.path.insert(0, args.tree)
        for name in [name for name in sys.modules if name == "service" or name.startswith("service.")]:
            del sys.modules[name]
    per_delta, written = measure(args.streams, args.deltas, args.spread, args.send)
    print(
        json.dumps(
            {
                "tree": args.tree or ".",
                "spread": args.spread,
                "send": args.send,
                "cpu_us_per_delta": round(per_delta * 1e6, 1),
                "sse_bytes": written,
            }
        )
    )


if __name__ == "__main__":
    main()
