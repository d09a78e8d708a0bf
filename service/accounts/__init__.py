"""The upstream account pool, shared by every worker process through Redis.

    registry   accounts (seeded from UPSTREAM_COOKIES, managed by the admin API), secrets sealed
    health     ready / cooling / needs_attention / disabled, and what moves an account between them
    capacity   per-account semaphore with expiring leases + sliding-minute rate bucket (Lua)
    scheduler  the fair waiting line in front of the pool, and the choice of account for a turn
    admission  the web tier's expected-wait check before a turn is enqueued

Plain modules: no Flask, no websocket code. Workers and the admin API (web and CLI) use
them alike, so a change made through either is seen by every worker on its next turn.
"""
