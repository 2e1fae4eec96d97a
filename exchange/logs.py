"""Structured logs: JSON when not on a terminal, readable lines on one.

Logs are evidence, not leaks: the code logs ids, kinds, counts and reasons,
never notice content, keys, tokens or signed bytes. Tracebacks are rendered as
plain text without local variables, which could hold any of those.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for this process.

    Args:
        level: debug, info, warning or error.
        fmt: json, console, or auto (console on a terminal).
        stream: where to write (standard error by default).
    """
    out = stream or sys.stderr
    json_output = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info
            if json_output
            else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str, **bound: Any) -> Any:
    """A logger for `name`, with `bound` key-values on every line."""
    return structlog.get_logger(name).bind(**bound)
