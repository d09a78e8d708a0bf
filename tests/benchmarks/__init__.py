"""The gateway's benchmark: `python -m tests.benchmarks [--dialect bing|copilot|both] [--quick]`.

Not part of the test run (no module here is named `test_*`). It starts the whole
gateway on loopback — an embedded redis-server, the upstream simulator, one gunicorn
web process and one gevent worker process — and measures what the design promises:

    harness   starting and stopping that stack (every process stopped on exit, Ctrl-C too)
    streams   many concurrent SSE clients on one event loop, timestamped on arrival
    probes    sampling worker RSS, running turns and Redis connections per process
    measures  the four figures: added time-to-first-token, per-token relay latency,
              sessions per worker process, Redis connections per process
    report    percentiles, targets, and the table printed at the end

Benchmarks measure; they do not assert: a missed target prints MISS, never a failing exit.
"""
