"""Live-federation fixtures, shared with the adversarial and fault suites (`tests.live`)."""

from tests.live import federation

__all__ = ["federation"]
