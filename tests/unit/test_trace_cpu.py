"""A saved trace carries each side's CPU time per mark and names its round trips only when saved.

`deploy/bench --trace` prints CPU per phase next to wall time (on a shared machine wall
time is partly other processes'), and the names of each round trip's commands are worked
out from the packed sends when the trace is saved, not on the path it measures.
"""

from __future__ import annotations

import json
import time

from service.runtime import trace
from service.runtime.redis_conn import connect


def test_marks_carry_cpu_time_and_round_trips_are_named_at_save(redis_url: str) -> None:
    redis = connect(redis_url, role="test")
    redis.ping()  # the connection's own set-up is not the trace's
    traced = trace.start("web")
    try:
        traced.mark("accept")
        redis.set("trace:probe", "1")
        with trace.overlapped():
            redis.get("trace:probe")
        burn = time.thread_time() + 0.02
        while time.thread_time() < burn:  # 20 ms of this thread's CPU between the two marks
            pass
        traced.mark("enqueue")
    finally:
        trace.stop()
    assert all(isinstance(packed, tuple) for packed in traced.commands)  # not named yet
    saved = json.loads(traced.to_json())
    assert [m[0] for m in saved["marks"]] == ["accept", "enqueue"]
    assert [m[2] for m in saved["marks"]] == [0, 1]
    assert saved["commands"] == ["SET", "~GET"]
    assert len(saved["cpu"]) == 2 and saved["cpu"][1] - saved["cpu"][0] >= 0.02
