"""Per-key usage by UTC day: where admission and settling count it, and how it is read back.

It stands apart from `service.access.ratelimit` because reading the days is accounting,
not admission: the admin API and `keys_cli` read them (`usage`), while the admission and
settling scripts (`ratelimit.admit`, `ratelimit.settle`) only need the layout below
(`usage_prefix`, `USAGE_TTL`) to count into the same hashes:

    usage:<id>:<day>   hash per key and UTC day (days since the epoch):
                       requests, rejected, errors, input_tokens, output_tokens
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from redis import Redis

USAGE_TTL = 35 * 24 * 3600  # seconds a day's usage is kept
USAGE_FIELDS = ("requests", "input_tokens", "output_tokens", "errors", "rejected")


def usage_prefix(key_id: str) -> str:
    """Usage hashes are `<prefix><days since the epoch>`."""
    return f"usage:{key_id}:"


def usage(redis: Redis, key_id: str, *, days: int) -> list[dict[str, Any]]:
    """The key's usage for the last `days` UTC days, today first, zeros for quiet days."""
    seconds, _ = redis.time()
    today = int(seconds) // 86400
    with redis.pipeline(transaction=False) as pipe:
        for day in range(today, today - days, -1):
            pipe.hgetall(usage_prefix(key_id) + str(day))
        rows = pipe.execute()
    out = []
    for offset, row in enumerate(rows):
        date = dt.date(1970, 1, 1) + dt.timedelta(days=today - offset)
        counts = {name: int(row.get(name.encode(), 0)) for name in USAGE_FIELDS}
        out.append({"date": date.isoformat(), **counts})
    return out
