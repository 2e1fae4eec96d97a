"""The `exchange` command: federation, node, serve, client, simulate, audit.

Every command is a thin layer over `exchange.admin`, `exchange.node`,
`exchange.rpc.client` and `exchange.harness`; errors are printed as one line
naming what was wrong, with exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import sys

import grpc
import typer

from exchange.cli import audit, client, federation, node, serve
from exchange.cli._output import fail
from exchange.errors import ExchangeError

__all__ = ["app", "main"]

app = typer.Typer(
    name="exchange",
    help="The OPSC referral exchange: signed, sealed notices between national authorities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(federation.app, name="federation")
app.add_typer(node.app, name="node")
app.add_typer(client.app, name="client")
app.add_typer(audit.app, name="audit")
app.command("serve")(serve.serve)
app.command("simulate")(serve.simulate)


def main() -> None:
    """Console entry point."""
    try:
        app()
    except ExchangeError as exc:
        fail(str(exc))
    except grpc.aio.AioRpcError as exc:
        fail(f"{exc.code().name}: {exc.details()}")
    except KeyboardInterrupt:
        sys.exit(130)
