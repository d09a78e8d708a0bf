"""What history matching adds to a request: `ConversationStore.match` on a 50-turn history.

A stateless client re-sends its whole history every turn; before the gateway can decide
to continue a stored conversation it fingerprints that history and looks it up. This
measures exactly that step, in process against the stack's real Redis — fingerprint the
history, read the fingerprint index — for a hit and a miss, on a 50-turn (100-message)
history with ~400-character messages. (Continuing then loads the conversation once,
under its lock, as continuing by id does.)
"""

from __future__ import annotations

import time

from redis import Redis

from service.state.conversations import Conversation, ConversationStore, fingerprint
from tests.benchmarks.report import Metric, Target, percentile

TURNS = 50


def _history(turns: int) -> list[dict[str, str]]:
    messages = []
    for n in range(turns):
        messages.append({"role": "user", "content": f"Question {n}: " + "tell me more about it " * 18})
        messages.append({"role": "assistant", "content": f"Answer {n}: " + "here is what I know " * 20})
    return messages


def history_matching(redis: Redis, *, runs: int = 1000) -> list[Metric]:
    """p50/p99 of matching a 50-turn history (hit and miss) and of fingerprinting it alone."""
    store = ConversationStore(redis, ttl=600)
    history = _history(TURNS)
    store.save(
        Conversation(
            id="conv_bench_match", owner="bench", model="Balanced", system="Be brief.", messages=history
        )
    )
    other = [*history[:-1], {"role": "assistant", "content": "an answer the gateway never gave"}]

    def timed(call) -> list[float]:
        for _ in range(50):
            call()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1000)
        return samples

    hit = timed(lambda: store.match("bench", history))
    assert store.match("bench", history) is not None
    miss = timed(lambda: store.match("bench", other))
    digest = timed(lambda: fingerprint("Be brief.", history))
    target = Target("<=", 1.0)
    return [
        Metric("match_hit_p50", f"history match, {TURNS}-turn hit p50", percentile(hit, 50), "ms", digits=3),
        Metric("match_hit_p99", f"history match, {TURNS}-turn hit p99", percentile(hit, 99), "ms", target, 3),
        Metric(
            "match_miss_p99", f"history match, {TURNS}-turn miss p99", percentile(miss, 99), "ms", target, 3
        ),
        Metric("match_digest_p99", "  of which fingerprinting p99", percentile(digest, 99), "ms", digits=3),
    ]
