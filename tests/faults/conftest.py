"""Faults under running nodes: each case named after the fault it survives (`tests.live`)."""

from tests.live import federation

__all__ = ["federation"]
