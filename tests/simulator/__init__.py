"""A protocol-faithful Bing ChatHub upstream, run as a real server process on loopback.

It follows Parts A and E of /work/shared/reference/upstream-protocols.md: HTTP
`/turing/conversation/create`, the SignalR websocket `/sydney/ChatHub`, cumulative
type-1 updates, type 2/3 endings, expiry, turn limits, and faults selected by
`[sim:NAME]` prompt prefixes; plus a `/_sim/*` control API for tests.

Modules: `chathub` (frame shapes), `faults` (prefixes, memory answers), `search`
(cited answers), `state` (conversations, counters, clock), `turns` (what a turn
sends), `control` (HTTP routes), `server` (the websocket I/O), `__main__` (CLI).
Start it with `python -m tests.simulator --port 0`, or from tests through
`tests.support.simulator.SimulatorProcess`.
"""
