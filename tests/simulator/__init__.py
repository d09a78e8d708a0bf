"""A protocol-faithful upstream for both dialects, run as a real server process on loopback.

One process, one port, two dialects whose paths do not overlap:

- Bing ChatHub (Parts A and E of /work/shared/reference/upstream-protocols.md): HTTP
  `/turing/conversation/create`, the SignalR websocket `/sydney/ChatHub`, cumulative
  type-1 updates, type 2/3 endings, expiry and turn limits.
- Consumer Copilot (Parts B and E): `GET /`, the `/c/api/*` REST routes, and the JSON
  websocket `/c/api/chat` with `connected`-first ordering, delta `appendText` events,
  challenges (hashcash, arithmetic, null, cloudflare), citations, images and errors.

Both are also served over TLS on a second port when started with `--tls-dir` (a test CA
made at start-up), where every connection's ClientHello is read and fingerprinted, and an
off-by-default Cloudflare gate (B5b) can challenge clients that are not the browser they
claim to be, or replay a `cf_clearance` earned by another identity.

Both pick faults by `[sim:NAME]` prompt prefixes and share the `/_sim/*` control API,
config and counters, and one per-account model (`accounts`: who a request is, B5a's
in-flight and per-minute limits, forced account faults, per-account counters).
Modules: `chathub` / `copilot` (frame shapes), `faults` (prefixes,
memory answers), `search` / `copilot_media` (cited and image content), `challenges`
(Copilot proof-of-work), `state` / `copilot_state` (conversations, counters, clock),
`turns` / `copilot_turns` (what a turn sends), `control` / `copilot_routes` / `http_util`
(HTTP routes), `server` / `copilot_session` / `playback` (the websocket I/O), `tls_certs` /
`tls_listener` / `tls_hello` (the TLS port, ClientHello, JA3/JA4), `browsers` / `cloudflare`
/ `cloudflare_routes` (the gate and its clearances), `__main__` (CLI). Start it with
`python -m tests.simulator --port 0`, or from tests through
`tests.support.simulator.SimulatorProcess`.
"""
