"""The harness's loopback ports: the whole range, or the slice a test worker was given."""

from __future__ import annotations

import pytest

from exchange.harness import setup


def test_without_the_variable_every_harness_port_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(setup.PORTS_VARIABLE, raising=False)
    assert setup.harness_ports() == range(20000, 32000)


def test_free_ports_come_from_the_slice_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(setup.PORTS_VARIABLE, "26000-26049")
    assert setup.harness_ports() == range(26000, 26050)
    handed = {setup.free_port() for _ in range(20)}
    assert len(handed) == 20
    assert all(26000 <= port <= 26049 for port in handed)


@pytest.mark.parametrize(
    "value", ["26000", "26000-", "low-high", "26050-26000", "19000-20500", "31000-32000"]
)
def test_a_bad_slice_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(setup.PORTS_VARIABLE, value)
    with pytest.raises(ValueError, match=setup.PORTS_VARIABLE):
        setup.harness_ports()
