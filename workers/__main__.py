"""`python -m workers`: one worker process running many turns at once on gevent.

gevent must patch the standard library before anything else is imported, so that
sockets, threads and Redis connections cooperate; that is all this file does before
handing over to `workers.main`. Name resolution uses gevent's c-ares resolver unless
GEVENT_RESOLVER says otherwise: the default thread-pool resolver costs ~0.1 ms per
lookup and queues under load, and every turn resolves the upstream host twice.
glibc's malloc is tuned first (`workers.allocator`: fixed mmap threshold, two arenas),
before gevent's hub starts threads: with the browser transport it cuts the resident
memory of each open session by more than half. gevent's greenlet-tree tracking is off
unless GEVENT_TRACK_GREENLET_TREE says otherwise: it is a debugging aid that keeps, for
every greenlet (two per turn), up to ten frames of the stack that spawned it and a locals
dict, about 1–2 KB each of a session's memory (issue #20: ≤ 0.1 MB per session).
"""

import os

from workers import allocator

allocator.tune(os.environ)
os.environ.setdefault("GEVENT_RESOLVER", "ares")
os.environ.setdefault("GEVENT_TRACK_GREENLET_TREE", "false")

from gevent import monkey  # noqa: E402

monkey.patch_all()

import sys  # noqa: E402

from workers.main import main  # noqa: E402

sys.exit(main(os.environ))
