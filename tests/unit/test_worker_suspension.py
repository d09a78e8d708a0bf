"""`rq suspend` is asked about at most once a second, and still noticed.

RQ's work loop checks for a suspension before every dequeue: a Redis round trip (and its
CPU) in the worker process while the turn it just started is on its way to its first token.
`OutageTolerantWorker.check_for_suspension` asks at most every SUSPENSION_CHECK_EVERY.
"""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Queue
from rq.exceptions import StopRequested
from rq.suspension import resume, suspend

from workers import redis_outage
from workers.redis_outage import OutageTolerantWorker


def test_a_suspension_is_noticed_within_the_interval_not_before(redis_url: str) -> None:
    connection = Redis.from_url(redis_url)
    worker = OutageTolerantWorker([Queue("suspension", connection=connection)], connection=connection)
    worker.check_for_suspension(burst=True)  # not suspended: asked, and goes on
    suspend(connection)
    try:
        worker.check_for_suspension(burst=True)  # asked less than a second ago: not asked again
        worker._suspension_checked -= redis_outage.SUSPENSION_CHECK_EVERY  # a second later
        with pytest.raises(StopRequested):  # a burst worker stops when suspended (RQ's behaviour)
            worker.check_for_suspension(burst=True)
    finally:
        resume(connection)


def test_an_unreachable_redis_is_not_counted_as_asked(redis_url: str) -> None:
    gone = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    connection = Redis.from_url(redis_url)
    worker = OutageTolerantWorker([Queue("suspension", connection=connection)], connection=connection)
    worker.connection = gone
    worker.check_for_suspension(burst=True)  # the outage is noted, not raised
    assert worker._redis_down_since is not None
    worker.connection = connection
    suspend(connection)
    try:
        with pytest.raises(StopRequested):  # asked again at once: the failed check did not count
            worker.check_for_suspension(burst=True)
    finally:
        resume(connection)
