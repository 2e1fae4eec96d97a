"""The ceiling: a bare gRPC server in its own process, with the node's own TLS.

It does none of the exchange's work (no signature, no sealing, no store): it
receives bytes and answers, so what a benchmark measures against it is what
gRPC, TLS, loopback and this machine allow. It is run as
`python -m exchange.harness.bench.bare` with a node directory, whose federation
key and certificate (mTLS: clients must present a certificate of the federation
CA, as peers do) or authority key and certificate (server-only TLS, as the
authority port) it serves with.

Methods (`/bench.Bare/...`), bytes in and out, no protobuf:
- `Sink`: any request, a reply of `--reply-bytes` (a receipt's size, say);
- `Echo`: the request back;
- `Source`: the request is a decimal size; a reply of that many bytes;
- `Stream`: for each request message, one reply of `--reply-bytes`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import grpc

from exchange.layout import NodeLayout
from exchange.rpc.peers import MAX_MESSAGE_BYTES
from exchange.rpc.tls import NodeTls, authority_server_credentials

__all__ = ["BareClient", "BareServer", "Security"]

Security = Literal["mtls", "tls"]
_SERVICE = "bench.Bare"
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
READY_TIMEOUT = 30.0


def _handlers(reply: bytes) -> grpc.GenericRpcHandler:
    async def sink(_request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return reply

    async def echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    async def source(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return bytes(int(request))

    async def stream(
        requests: AsyncIterator[bytes], _context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield reply

    return grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            "Sink": grpc.unary_unary_rpc_method_handler(sink),
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Source": grpc.unary_unary_rpc_method_handler(source),
            "Stream": grpc.stream_stream_rpc_method_handler(stream),
        },
    )


async def _serve(directory: Path, port: int, security: Security, reply_bytes: int) -> None:
    layout = NodeLayout(directory)
    credentials = (
        NodeTls.load(layout, None).server_credentials()
        if security == "mtls"
        else authority_server_credentials(layout, None)
    )
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((_handlers(bytes(reply_bytes)),))
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


class BareServer:
    """One bare server process on loopback, serving with a node's TLS material."""

    def __init__(
        self, directory: Path, port: int, security: Security, *, reply_bytes: int = 0
    ) -> None:
        self.directory = directory
        self.port = port
        self.security = security
        self._process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            [
                sys.executable,
                "-m",
                "exchange.harness.bench.bare",
                str(directory),
                "--port",
                str(port),
                "--security",
                security,
                "--reply-bytes",
                str(reply_bytes),
            ],
            stderr=subprocess.PIPE,
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def check_running(self) -> None:
        if self._process.poll() is not None:
            _, stderr = self._process.communicate()
            raise RuntimeError(f"the bare gRPC server exited:\n{stderr.decode(errors='replace')}")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class BareClient:
    """A client of a `BareServer`, with the credentials a peer or an authority system has.

    Args:
        client_directory: for mTLS, the node whose federation certificate the
            client presents (the sender, as in a delivery).
    """

    def __init__(self, server: BareServer, client_directory: Path | None = None) -> None:
        server_layout = NodeLayout(server.directory)
        if server.security == "mtls":
            assert client_directory is not None, "mTLS needs a client certificate"
            credentials = NodeTls.load(NodeLayout(client_directory), None).channel_credentials()
            # The peer certificates name the node id, as the exchange's channels check.
            name = server_layout.root.name
        else:
            credentials = grpc.ssl_channel_credentials(
                server_layout.authority_certificate.read_bytes()
            )
            name = "127.0.0.1"
        self._server = server
        self._channel = grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}",
            credentials,
            [*_OPTIONS, ("grpc.ssl_target_name_override", name)],
        )
        self.sink: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            f"/{_SERVICE}/Sink"
        )
        self.echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            f"/{_SERVICE}/Echo"
        )
        self.source: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            f"/{_SERVICE}/Source"
        )
        self.stream: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = self._channel.stream_stream(
            f"/{_SERVICE}/Stream"
        )

    async def ready(self) -> None:
        """Wait until the server answers (the TLS handshake done, as on a warm channel)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            self._server.check_running()
            try:
                await self.sink(b"", timeout=1)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self._channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A bare gRPC server: the benchmark's ceiling.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--security", choices=["mtls", "tls"], required=True)
    parser.add_argument("--reply-bytes", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    asyncio.run(_serve(args.directory, args.port, args.security, args.reply_bytes))


if __name__ == "__main__":
    main()
