"""The failpoint switch: names checked, hit counts parsed, inert when unset."""

from __future__ import annotations

import pytest

from exchange import failpoints


@pytest.mark.parametrize(
    ("value", "armed"),
    [
        ("", None),
        ("receive.before_commit", ("receive.before_commit", 1)),
        ("deliver.after_send@3", ("deliver.after_send", 3)),
    ],
)
def test_a_failpoint_is_armed_by_name_and_hit(value: str, armed: tuple[str, int] | None) -> None:
    assert failpoints._armed(value) == armed


@pytest.mark.parametrize("value", ["receive.before_comit", "deliver.after_send@0", "@2"])
def test_a_misspelt_failpoint_refuses_to_start_rather_than_never_firing(value: str) -> None:
    with pytest.raises(ValueError, match=failpoints.ENVIRONMENT_VARIABLE):
        failpoints._armed(value)


def test_every_point_is_inert_when_none_is_armed() -> None:
    assert failpoints._ARMED is None
    for point in failpoints.POINTS:
        failpoints.reached(point)  # still alive
