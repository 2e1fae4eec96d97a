"""Progress of long admin operations: plain lines off a terminal, a bar on one."""

from __future__ import annotations

import io

from exchange.cli._progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_lines_are_throttled_and_the_last_says_done() -> None:
    out = io.StringIO()
    with progress("purging", 1_000, out=out, interval=3600) as advance:
        for _ in range(10):
            advance(100)
    first, last = out.getvalue().splitlines()
    assert first.startswith("purging: 0/1,000 (0%) ...")
    assert last.startswith("purging: 1,000/1,000 (100%) done")


def test_every_advance_is_a_line_when_the_interval_is_zero() -> None:
    out = io.StringIO()
    with progress("registering", out=out, interval=0) as advance:
        advance(3)
        advance(4)
    lines = out.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["0", "3", "7", "7"]
    assert lines[-1].split(" ")[2] == "done"


def test_an_operation_that_ends_short_of_its_total_says_where_it_stopped() -> None:
    out = io.StringIO()
    with progress("verifying", 10, out=out, interval=3600) as advance:
        advance(4)
    assert out.getvalue().splitlines()[-1].startswith("verifying: 4/10 (40%) stopped")


def test_a_failed_operation_does_not_claim_to_be_done() -> None:
    out = io.StringIO()
    try:
        with progress("verifying", 10, out=out, interval=3600) as advance:
            advance(4)
            raise RuntimeError("broken at entry 5")
    except RuntimeError:
        pass
    assert "done" not in out.getvalue()


def test_on_a_terminal_a_bar_counts_to_the_total() -> None:
    out = _Terminal()
    with progress("migrating the store", 8, out=out) as advance:
        advance(8)
    assert "migrating the store" in out.getvalue()
    assert "8/8" in out.getvalue()
