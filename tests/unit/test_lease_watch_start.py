"""The turn's watcher starts beside the turn without holding it up on its way to the first token.

Under gevent (as the worker runs) `Thread.start()` switches to every greenlet ready to run
before it returns: the worker loop's next dequeue and the watcher's first pipeline ran in
the middle of the turn's way to its upstream `send`. `lease_watch.beside` spawns a greenlet
there, which runs only once the turn first waits; without gevent it is a daemon thread.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
from gevent import monkey
monkey.patch_all()
import gevent
from workers.lease_watch import beside
order = []
gevent.spawn(lambda: order.append("ready greenlet"))
beside(lambda: order.append("watcher"), name="turn-watch")
order.append("turn goes on")
gevent.sleep(0.05)
print(",".join(order))
"""


def test_under_gevent_the_turn_goes_on_before_anything_else_runs() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "turn goes on,ready greenlet,watcher"


def test_without_gevent_it_is_a_daemon_thread() -> None:
    from workers.lease_watch import beside

    ran = threading.Event()
    seen: list[tuple[str, bool]] = []

    def target() -> None:
        seen.append((threading.current_thread().name, threading.current_thread().daemon))
        ran.set()

    beside(target, name="turn-watch")
    assert ran.wait(5)
    assert seen == [("turn-watch", True)]
