"""Named health problems: any one makes the node NOT_SERVING, each with its reason."""

from __future__ import annotations

from exchange.health import HealthConditions


async def test_any_problem_means_not_serving_until_the_last_is_cleared() -> None:
    conditions = HealthConditions()
    told: list[bool] = []

    async def listener(serving: bool) -> None:
        told.append(serving)

    await conditions.watch(listener)
    await conditions.report("trust_list_stale", "trust list version 3 expired")
    await conditions.report("audit_inconsistent", "head 9 does not extend head 8")
    assert not conditions.serving
    assert dict(conditions.problems()) == {
        "trust_list_stale": "trust list version 3 expired",
        "audit_inconsistent": "head 9 does not extend head 8",
    }
    await conditions.clear("trust_list_stale")
    assert not conditions.serving
    await conditions.clear("audit_inconsistent")
    assert conditions.serving
    # Told once at watch, once per change of serving; not per problem.
    assert told == [True, False, True]


async def test_reporting_again_updates_the_reason_and_clearing_twice_is_harmless() -> None:
    conditions = HealthConditions()
    await conditions.report("trust_list_stale", "first")
    await conditions.report("trust_list_stale", "second")
    assert conditions.problems()["trust_list_stale"] == "second"
    await conditions.clear("trust_list_stale")
    await conditions.clear("trust_list_stale")
    assert conditions.serving
