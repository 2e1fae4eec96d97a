"""Attacks on running nodes: each case named after the attack it stops (`tests.live`)."""

from tests.live import federation

__all__ = ["federation"]
