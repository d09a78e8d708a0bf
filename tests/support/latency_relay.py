"""A TCP relay that delays every chunk by a fixed time: network latency where `tc netem` is missing.

`python -m tests.support.latency_relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS`

Each direction of each connection forwards its chunks in order, each no earlier than
`DELAY_MS` after it was read; reading goes on meanwhile, so the delay adds latency
without capping throughput (as a longer wire would). Prints `READY` once listening.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(send())
    try:
        while chunk := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, chunk))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0.0, b""))
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def _serve(listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay))

    server = await asyncio.start_server(handle, *listen)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    """Relay LISTEN_HOST:LISTEN_PORT to TARGET_HOST:TARGET_PORT with DELAY_MS each way."""
    listen_host, listen_port, target_host, target_port, delay_ms = argv
    asyncio.run(
        _serve((listen_host, int(listen_port)), (target_host, int(target_port)), float(delay_ms) / 1000)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
