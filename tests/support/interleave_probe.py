"""Run under gevent (as the worker does): do concurrent browser-transport calls interleave?

    python -m tests.support.interleave_probe SLOW_URL COPILOT_URL

Prints one JSON line: how long one slow REST call took alone and two together, one Copilot
turn alone and two together, and the longest the event loop went without running a ticker
greenlet meanwhile. A transport that blocked the loop would serialise the calls (double the
time) and starve the ticker for a whole call.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import gevent  # noqa: E402

from service.accounts.identity import default_identity  # noqa: E402
from service.runtime.settings import load_settings  # noqa: E402
from workers.upstream import Credentials, build_client  # noqa: E402
from workers.upstream.context import TurnInput  # noqa: E402
from workers.upstream.wire import build_transport  # noqa: E402


def timed(jobs: list[Callable[[], object]]) -> float:
    started = time.monotonic()
    gevent.joinall([gevent.spawn(job) for job in jobs], raise_error=True)
    return time.monotonic() - started


def main(slow_url: str, copilot_url: str) -> None:
    gaps: list[float] = []
    running = True

    def ticker() -> None:
        last = time.monotonic()
        while running:
            gevent.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    transport = build_transport("browser", identity=default_identity(), key="probe")
    settings = load_settings(
        {"UPSTREAM": "copilot", "COPILOT_URL": copilot_url, "REDIS_URL": "redis://127.0.0.1:1/0"}
    )

    def rest() -> None:
        assert transport.request("GET", slow_url, headers={}, timeout=10).status == 200

    def turn(name: str) -> Callable[[], None]:
        def run() -> None:
            client = build_client(settings, Credentials(name, cookies=f"_U={name}"))
            handle = client.create_conversation(account=name)
            events = list(client.stream_turn(handle, TurnInput("hello there"), should_stop=lambda: False))
            assert type(events[-1]).__name__ == "Done"

        return run

    turn("warm")()
    tick = gevent.spawn(ticker)
    result = {
        "rest_one": timed([rest]),
        "rest_two": timed([rest, rest]),
        "turn_one": timed([turn("one")]),
        "turn_two": timed([turn("two-a"), turn("two-b")]),
    }
    running = False
    tick.join()
    result["max_gap"] = max(gaps)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
