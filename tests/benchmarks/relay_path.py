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
import json
import subprocess
import sys
import time
from typing import Any

PUBLISH = """
import json, sys, time
from redis import Redis
url, streams, deltas, spread = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
r = Redis.from_url(url)
for i in range(deltas + 1):
    p = r.pipeline(transaction=False)
    for s in range(streams):
        done = {"type": "done", "text": "x", "finish_reason": "stop", "seq": i}
        delta = {"type": "delta", "text": f"t{i} ", "seq": i}
        p.publish(f"relay:c{s}", json.dumps(done if i == deltas else delta))
        if spread:  # one message at a time, as paced streams' deltas arrive
            p.execute()
            time.sleep(0.02 / streams)
    p.execute()
    time.sleep(0 if spread else 0.004)
"""


def measure(streams: int, deltas: int, spread: bool = False) -> tuple[float, int]:
    """(CPU seconds per delta, SSE bytes written) for `streams` streams of `deltas` deltas.

    By default each round of deltas (one per stream) is published in one pipeline, 4 ms
    apart: the web side reads them in batches. `spread` publishes them one at a time, a
    round every 20 ms (Busbar's pace): the web side wakes for nearly every delta.
    """
    import gevent
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
            for item in body:  # bytes, or an older tree's str (werkzeug encoded those)
                written += len(item if isinstance(item, bytes) else item.encode())

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
    parser.add_argument("--spread", action="store_true", help="publish one delta at a time, 20 ms a round")
    args = parser.parse_args(argv)
    from gevent import monkey

    monkey.patch_all()
    if args.tree:
        sys.path.insert(0, args.tree)
        for name in [name for name in sys.modules if name == "service" or name.startswith("service.")]:
            del sys.modules[name]
    per_delta, written = measure(args.streams, args.deltas, args.spread)
    print(
        json.dumps(
            {
                "tree": args.tree or ".",
                "spread": args.spread,
                "cpu_us_per_delta": round(per_delta * 1e6, 1),
                "sse_bytes": written,
            }
        )
    )


if __name__ == "__main__":
    main()
