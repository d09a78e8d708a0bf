"""The upstream account pool, shared by every worker process through Redis.

    registry   accounts (seeded from UPSTREAM_COOKIES, managed by the admin API), secrets sealed
    health     ready / cooling / needs_attention / disabled, and what moves an account between them
    capacity   per-account semaphore with expiring leases + sliding-minute rate bucket (Lua)
    scheduler  the fair waiting line in front of the pool, and the choice of account for a turn
    admission  the web tier's expected-wait check before a turn is enqueued
    identity   an account's browser identity: UA, client hints, language, curl_cffi profile
    capture    reading one from a request copied as cURL or a HAR (pure parsers)
    imports    an admin request's `curl` / `har` / `proxy` as registry fields plus warnings
    checks     `POST /admin/accounts/{id}/check`: a worker runs it, the web tier waits

Plain modules: no Flask, no websocket code. Workers and the admin API (web and CLI) use
them alike, so a change made through either is seen by every worker on its next turn.
"""
