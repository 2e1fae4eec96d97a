"""Node processes of the simulation: `exchange serve`, started, killed and restarted.

A node on PostgreSQL may run several processes (`SimNode.replicas`):
`NodeProcess(node, instance=1)` is its second, on its own ports (the
environment overrides of node.toml's listen addresses) with its own log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.harness.setup import SimNode

__all__ = ["NodeProcess"]

READY_TIMEOUT = 30.0


class NodeProcess:
    """One `exchange serve` process, its log in the node directory.

    Args:
        instance: which of the node's processes (0: the first, on node.toml's
            ports; n: on the ports of `node.replicas[n - 1]`).
    """

    def __init__(
        self, node: SimNode, environ: dict[str, str] | None = None, *, instance: int = 0
    ) -> None:
        self.node = node
        self.instance = instance
        federation_port, authority_port = node.ports(instance)
        self.authority_address = f"127.0.0.1:{authority_port}"
        listen = (
            {
                "EXCHANGE_FEDERATION_LISTEN": f"127.0.0.1:{federation_port}",
                "EXCHANGE_AUTHORITY_LISTEN": self.authority_address,
            }
            if instance
            else {}
        )
        self._environ = {**os.environ, **listen, **(environ or {})}
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path: Path = node.directory / (
            f"serve-{instance}.log" if instance else "serve.log"
        )
        self.starts = 0

    @staticmethod
    def all_of(node: SimNode, environ: dict[str, str] | None = None) -> list[NodeProcess]:
        """Every `serve` process of `node` (one, or one per replica more)."""
        return [NodeProcess(node, environ, instance=i) for i in range(node.processes)]

    def start(self, environ: dict[str, str] | None = None) -> None:
        """Start the node and wait until its authority port reports SERVING.

        Args:
            environ: variables for this start only (a failpoint, say), over the
                process's own.
        """
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [sys.executable, "-m", "exchange", "serve", str(self.node.directory)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"EXCHANGE_LOG_LEVEL": "info", **self._environ, **(environ or {})},
            )
        self.starts += 1
        self._wait_ready()

    def _wait_ready(self) -> None:
        credentials = grpc.ssl_channel_credentials(self.node.authority_certificate)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                with grpc.secure_channel(self.authority_address, credentials) as channel:
                    status = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                if status.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: graceful stop."""
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signum)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def wait_exit(self, timeout: float) -> int | None:
        """Wait until the process has ended (killed at a failpoint, say); its exit status.

        Returns None if it is still running after `timeout` seconds.
        """
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def name(self) -> str:
        return f"{self.node.node_id}#{self.instance}" if self.instance else self.node.node_id

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
