"""A TCP proxy on loopback that mistreats the connections between two nodes.

Put between a node and a peer's federation port (the peer's trust-list
endpoint names the proxy, the peer listens behind it), it passes mTLS through
untouched: it sees only ciphertext, and faults the connections themselves.

Modes, switched at any time (they apply to live connections too):

- ``PASS``: bytes flow both ways.
- ``DROP``: connections are closed as soon as they are accepted, and those
  open are aborted (the dialling node sees the peer unreachable).
- ``HOLD``: bytes from the peer back to the dialler are held, not sent; `cut`
  then aborts the connections mid-stream (held bytes lost), or `PASS` lets
  them through late.
- ``DELAY``: each chunk from the peer back to the dialler is sent `delay`
  seconds late.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

__all__ = ["FaultyProxy", "Mode"]

_CHUNK = 64 * 1024


class Mode(enum.Enum):
    PASS = "pass"
    DROP = "drop"
    HOLD = "hold"
    DELAY = "delay"


class FaultyProxy:
    """Listens on `port`, forwards to `target_port` on loopback, with faults."""

    def __init__(self, port: int, target_port: int, *, delay: float = 0.0) -> None:
        self.port = port
        self._target = target_port
        self.delay = delay
        self._mode = Mode.PASS
        self._released = asyncio.Event()
        self._released.set()
        self._server: asyncio.Server | None = None
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.dropped = 0
        self.cut_connections = 0

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        self._mode = mode
        if mode is Mode.HOLD:
            self._released.clear()
        else:
            self._released.set()
        if mode is Mode.DROP:
            self.cut()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def cut(self) -> None:
        """Abort every open connection, both sides, mid-stream (held bytes are lost)."""
        for dialler, peer in list(self._live):
            dialler.transport.abort()
            peer.transport.abort()
            self.cut_connections += 1
        self._live.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode is Mode.DROP:
            self.dropped += 1
            writer.transport.abort()
            return
        try:
            peer_reader, peer_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, peer_writer)
        self._live.add(pair)
        forward = asyncio.create_task(self._pump(reader, peer_writer, back=False))
        back = asyncio.create_task(self._pump(peer_reader, writer, back=True))
        self._tasks |= {forward, back}
        try:
            await asyncio.gather(forward, back, return_exceptions=True)
        finally:
            self._tasks -= {forward, back}
            self._live.discard(pair)
            for side in pair:
                side.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, back: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(_CHUNK):
                if back:
                    await self._released.wait()
                    if self._mode is Mode.DELAY:
                        await asyncio.sleep(self.delay)
                if writer.transport.is_closing():
                    return
                writer.write(chunk)
                await writer.drain()
        # One side closed: close the other, as a TCP proxy does.
        writer.transport.abort()
