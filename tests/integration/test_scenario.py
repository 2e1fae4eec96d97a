"""The simulation's scenario, against in-process nodes on each store engine."""

from __future__ import annotations

from exchange.harness.scenario import Scenario
from tests.live import Federation


async def test_scenario_meets_every_expectation(federation: Federation) -> None:
    report = await Scenario(federation.nodes, federation, timeout=20).run()
    failed = [check for check in report.checks if not check.passed]
    assert not failed, failed
    # The scenario really ran: every type of the catalogue crossed, and a node restarted.
    kinds = {t.kind for t in report.traffic}
    assert kinds == {
        "CASE_REFERRAL",
        "ACKNOWLEDGEMENT",
        "ASSISTANCE_REQUEST",
        "ASSISTANCE_RESPONSE",
        "EXTRADITION_NOTICE",
        "SEIZURE_REQUEST",
        "SEIZURE_RESPONSE",
        "VICTIM_SUPPORT_COORDINATION",
        "TRAVEL_ALERT",
        "CONTENT_HASH_REFERRAL",
        "WITHDRAWAL",
        "DISCLOSURE_REQUEST",
        "DISCLOSURE_GRANT",
    }
    assert any(t.outcome == "delivered after restart" for t in report.traffic)
    # Each recipient's view is reported, with the held-back section by name only.
    support = [r for r in report.readable if r.kind == "VICTIM_SUPPORT_COORDINATION"]
    assert [r.withheld for r in support] == [("s1 (VICTIM_IDENTITY)",)]
    assert {o.owed for o in report.overdue} == {"by us", "to us"}
