"""Command line: `python -m tests.simulator [--host H] [--port P] [...]`.

Prints exactly one line, `READY http://HOST:PORT`, on stdout once listening (so a parent
process can start it with `--port 0` and learn the port), then serves until SIGTERM or
SIGINT. Logs go to stderr. With `--tls-dir DIR` it also serves TLS (a test CA made at
start-up, written to `DIR/ca.pem`) on `--tls-port`, and the line is
`READY http://HOST:PORT https://localhost:TLS_PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from tests.simulator import tls_certs
from tests.simulator.server import run
from tests.simulator.state import SimConfig, SimulatorState


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The CLI options; defaults are what `POST /_sim/reset` restores."""
    parser = argparse.ArgumentParser(prog="python -m tests.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--token-delay", type=float, default=0.005, help="seconds between answer updates")
    parser.add_argument("--max-turns", type=int, default=30, help="maxNumUserMessagesInConversation")
    parser.add_argument("--expiry", type=float, default=21600.0, help="conversation lifetime in seconds")
    parser.add_argument("--words-per-update", type=int, default=1, help="words added by each answer update")
    parser.add_argument(
        "--account-max-concurrent",
        type=int,
        default=4,
        help="chat sockets in flight per account before HTTP 502; 0 = unlimited (default 4, B5a)",
    )
    parser.add_argument(
        "--account-rpm",
        type=int,
        default=15,
        help="turns per minute per account before the throttle answer; 0 = unlimited (default 15, B5a)",
    )
    parser.add_argument(
        "--tls-dir", default=None, help="also serve TLS; a fresh test CA goes to DIR/ca.pem (default off)"
    )
    parser.add_argument("--tls-port", type=int, default=0, help="TLS port; 0 picks a free one (default)")
    parser.add_argument(
        "--turn-seconds",
        type=float,
        default=0.0,
        help="least seconds a turn takes, as the real service's ~3.5 s (default 0: token delays only)",
    )
    parser.add_argument("--log-level", default="INFO", help="stderr log level (DEBUG logs client frames)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    config = SimConfig(
        token_delay=args.token_delay,
        max_turns=args.max_turns,
        expiry_seconds=args.expiry,
        words_per_update=args.words_per_update,
        account_max_concurrent=max(0, args.account_max_concurrent),
        account_rpm=max(0, args.account_rpm),
        turn_seconds=max(0.0, args.turn_seconds),
    )
    state = SimulatorState(config)
    tls = None
    if args.tls_dir:
        tls_certs.write_certificates(Path(args.tls_dir))
        tls = tls_certs.server_context(Path(args.tls_dir))
    serving = asyncio.ensure_future(
        run(state, args.host, args.port, ready=_announce, tls=tls, tls_port=args.tls_port)
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, serving.cancel)
    watchdog = asyncio.ensure_future(_watch_parent(args.parent_pid, serving)) if args.parent_pid else None
    try:
        await serving
    except asyncio.CancelledError:
        logging.getLogger(__name__).info("event=simulator_stopped")
    finally:
        if watchdog is not None:
            watchdog.cancel()


async def _watch_parent(parent_pid: int, serving: asyncio.Future[None]) -> None:
    """Stop serving once the parent is gone, so a crashed test run leaves no simulator behind."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(0.5)
    logging.getLogger(__name__).warning("event=parent_gone parent_pid=%s", parent_pid)
    serving.cancel()


def _announce(url: str) -> None:
    print(f"READY {url}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: configure stderr logging, serve until a signal arrives."""
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # websockets logs every plain-HTTP answer as a rejected handshake; keep that quiet.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
