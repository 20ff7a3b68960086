"""The search itself: both ends judged, then the commits `git bisect` chooses, each judged by a callback.

The callback builds and runs a commit and says good, bad or skip (harness/app/bisect.py); git, in the
harness's clone, keeps the state and chooses. Apart from the kernel so that the search is tested on small
repositories with a judge of the test's own (tests/test_bisect_units.py), against git itself.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.bisect.git import Clone, Ended, ended
from harness.bisect.judge import BAD, GOOD, Verdict
from harness.errors import UserError

# (commit, role: good | bad | step) -> its verdict; for an end, the clone is checked out at it first
Judge = Callable[[str, str], Verdict]


class EndNotAsGiven(UserError):
    """--good does not hold, or --bad does not fail: there is nothing to bisect."""


def search(clone: Clone, good: str, bad: str, judge: Judge) -> tuple[Ended, str]:
    """How the bisection of good..bad ended, and git's log of it (`git bisect replay` takes it)."""
    for sha, role, want in ((good, "good", GOOD), (bad, "bad", BAD)):
        clone.checkout(sha)
        verdict = judge(sha, role)
        if verdict.term != want:
            raise EndNotAsGiven(f"the check {'does not hold' if want == GOOD else 'does not fail'} at --{role} "
                                f"{sha[:12]}: {verdict.term.upper()}: {verdict.reason}"
                                + ("; nothing to bisect" if want == BAD else ""))
    said = clone.start(bad, good)
    while (over := ended(said)) is None:
        sha = clone.head()
        said = clone.mark(judge(sha, "step").term, sha)
    return over, clone.log()
