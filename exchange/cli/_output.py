"""Printing for the CLI: rich tables on a terminal, JSON for scripts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

__all__ = ["console", "fail", "print_json", "print_message", "table"]

# Messages are not wrapped at the console's width (80 columns when piped): a
# script or a log then finds each on one line; a terminal wraps them itself.
console = Console(soft_wrap=True)
_errors = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> NoReturn:
    _errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise SystemExit(1)


def _plain(value: Any) -> Any:
    """Times as ISO 8601 text: the one non-JSON type our reports hold."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=_plain) + "\n")


def message_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_message(message: Message) -> None:
    print_json(message_dict(message))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    view = Table(title=title)
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*(str(cell) for cell in row))
    console.print(view, soft_wrap=False)  # a table is laid out to the width, title centred
