"""State kept in Redis: conversations, stored responses, idempotency records, locks, and the relay
that carries a turn's events from the worker to the web tier.

Plain modules: no Flask, no websocket code, so both tiers import them.
"""
