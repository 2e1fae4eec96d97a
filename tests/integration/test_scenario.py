"""The simulation's scenario, against in-process nodes on each store engine."""

from __future__ import annotations

from exchange.harness.scenario import Scenario
from tests.integration.conftest import Federation


async def test_scenario_meets_every_expectation(federation: Federation) -> None:
    report = await Scenario(federation.nodes, federation, timeout=20).run()
    failed = [check for check in report.checks if not check.passed]
    assert not failed, failed
    # The scenario really ran: a referral, an ack, a request across a restart, a response.
    assert [t.kind for t in report.traffic] == [
        "CASE_REFERRAL",
        "ACKNOWLEDGEMENT",
        "ASSISTANCE_REQUEST",
        "ASSISTANCE_RESPONSE",
    ]
