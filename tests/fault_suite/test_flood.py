"""Guests that send more than the host takes, on purpose. Run by tests/test_guest_floods.py through `harness run`
with small limits (HARNESS_LIMIT_OUTPUT_BYTES=4M, HARNESS_LIMIT_CONSOLE_LOG_BYTES=256K), which then checks
that each test ended in the outcome its expect_outcome marker names. Order matters: after each flood the
next test must get a working guest."""

from __future__ import annotations

import pytest


@pytest.mark.expect_outcome("FLOOD")
def test_command_floods_its_stdout(guest):
    guest.run(["yes"], timeout=300)


@pytest.mark.expect_outcome("PASS")
def test_the_next_test_has_a_working_guest(guest):
    assert guest.run(["echo", "fine"], check=True).stdout == "fine\n"


@pytest.mark.expect_outcome("FLOOD")
def test_console_floods(guest):
    """About 600 KB of lines on /dev/console, more than the 256 KiB the log takes; the command itself ends well."""
    line = "flood " + "0123456789" * 7
    guest.run(["sh", "-c", 'yes "$1" | head -c 600000 > /dev/console', "flood", line], timeout=300, check=True)


@pytest.mark.expect_outcome("PASS")
def test_after_the_console_flood_the_next_test_has_a_working_guest(guest):
    assert guest.run(["true"]).ok
