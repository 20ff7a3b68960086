"""The fault suites' expectations are markers, read the way pytest collects them: a test without one,
or with an outcome that does not exist, is an error, never a silent change of what the test expects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import paths
from harness.results.outcome import Outcome
from tests.fault_outcomes import SuiteError, expected_outcomes

SUITES = ["tests/fault_suite/test_inject.py", "tests/fault_suite/test_kasan.py", "tests/fault_suite/test_vmcore.py",
          "tests/driver_fault_suite/test_planted.py"]


@pytest.mark.parametrize("suite", SUITES)
def test_every_shipped_fault_test_names_its_outcome(suite: str) -> None:
    expected = expected_outcomes(paths.REPO / suite)
    tests = re.findall(r"^def (test_\w+)\(", (paths.REPO / suite).read_text(), re.M)
    # Keyed as `harness run` writes outcomes.json: relative to the repository, one per test function.
    assert sorted(expected) == sorted(f"{suite}::{name}" for name in tests)
    assert set(expected.values()) <= set(Outcome)


def write_suite(tmp_path: Path, body: str) -> Path:
    suite = tmp_path / "test_suite.py"
    suite.write_text(f"import pytest\n\n\n{body}")
    return suite


def test_the_marker_is_the_expectation(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, '@pytest.mark.expect_outcome("CRASH")\ndef test_oops():\n    pass\n')
    ((test, outcome),) = expected_outcomes(suite).items()
    assert test.endswith("::test_oops") and outcome == "CRASH"


@pytest.mark.parametrize(("body", "needle"), [
    ('def test_unmarked():\n    pass\n', "test_unmarked has no @pytest.mark.expect_outcome"),
    ('@pytest.mark.expect_outcome("CRAHS")\ndef test_typo():\n    pass\n', "expect_outcome('CRAHS',) is not one of"),
    ('@pytest.mark.expect_outcome()\ndef test_empty():\n    pass\n', "expect_outcome() is not one of"),
    ('@pytest.mark.expect_outcom("CRASH")\ndef test_misspelt_marker():\n    pass\n', "'expect_outcom' not found"),
], ids=["unmarked", "unknown-outcome", "no-outcome", "misspelt-marker"])
def test_a_missing_or_unknown_outcome_is_an_error(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(SuiteError, match=re.escape(needle)):
        expected_outcomes(write_suite(tmp_path, body))
