"""`harness bisect` without a kernel: the search against git itself on small repositories (a judge of the
test's own reads the checked-out file), the user's repository left as it was, revisions as untrusted input,
the checks judged from run directories written here, and the culprit's KCIDB record.

The kernel path (a 40-commit history on Debian's 6.12, a build that breaks, two culprits) is
tests/test_bisect_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from harness.app.bisect import BisectRequest, BisectResult, Step, after_compare, kcidb
from harness.bisect import git
from harness.bisect.judge import BAD, GOOD, SKIP, Check, Verdict, combined, judge
from harness.bisect.search import EndNotAsGiven, search
from harness.cli.main import main
from harness.errors import UserError
from harness.results import compare
from harness.results.kcidb import test_path as kcidb_test_path
from harness.results.load import load_run
from harness.results.model import Result, Timings, write_results
from harness.results.outcome import Outcome
from harness.results.regressions import find_regressions, format_regressions
from tests.test_kcidb import plain_run, valid

ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "T",
       "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.org"}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], env=ENV, capture_output=True, text=True,
                          check=True).stdout.strip()


def history(repo: Path, n: int, bug_at: int, broken: tuple[int, ...] = ()) -> list[str]:
    """Commits 0..n of one file, state.txt: "bug" from commit `bug_at` on, "broken" in the `broken` ones."""
    repo.mkdir()
    _git(repo, "init", "-q", "--initial-branch=main")
    shas = []
    for i in range(n + 1):
        words = [f"commit {i}", *(["bug"] if i >= bug_at else []), *(["broken"] if i in broken else [])]
        (repo / "state.txt").write_text("\n".join(words) + "\n")
        (repo / "mm").mkdir(exist_ok=True)
        (repo / "mm" / f"f{i % 3}.c").write_text(f"{i}\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"commit {i}")
        shas.append(_git(repo, "rev-parse", "HEAD"))
    return shas


class Reader:
    """A judge that reads the clone's state.txt, as a build and a run would read the tree; counts its calls."""

    def __init__(self, clone: git.Clone, flaky: frozenset[str] = frozenset()):
        self.clone, self.calls, self.flaky = clone, [], flaky

    def __call__(self, sha: str, role: str) -> Verdict:
        assert self.clone.head() == sha, "the commit judged is the one checked out"
        self.calls.append((sha, role))
        state = (self.clone.path / "state.txt").read_text()
        if "broken" in state or sha in self.flaky:
            return Verdict(SKIP, "did not build" if "broken" in state else "FLAKY: good, bad")
        return Verdict(BAD if "bug" in state else GOOD, state.splitlines()[0])


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("n,bug_at", [(40, 13), (40, 29), (33, 1), (33, 33), (7, 4), (1, 1)])
def test_the_first_bad_commit_within_log2_n_plus_2_judged(tmp_path: Path, cache: Path, n: int, bug_at: int) -> None:
    shas = history(tmp_path / "repo", n, bug_at)
    with git.private_clone(tmp_path / "repo") as clone:
        reader = Reader(clone)
        over, log = search(clone, shas[0], shas[-1], reader)
    assert over == git.Ended(shas[bug_at])
    assert len(reader.calls) <= math.ceil(math.log2(n)) + 2
    assert reader.calls[:2] == [(shas[0], "good"), (shas[-1], "bad")]
    assert f"# first bad commit: [{shas[bug_at]}]" in log


def test_a_commit_that_does_not_build_is_skipped_and_the_culprit_still_found(tmp_path: Path, cache: Path) -> None:
    shas = history(tmp_path / "repo", 40, 13, broken=(20,))
    with git.private_clone(tmp_path / "repo") as clone:
        reader = Reader(clone)
        over, log = search(clone, shas[0], shas[-1], reader)
    assert (shas[20], "step") == reader.calls[2], "git's first choice in 0..40 is commit 20: the skip is exercised"
    assert over == git.Ended(shas[13])
    assert f"git bisect skip {shas[20]}" in log


def test_skipped_commits_next_to_the_culprit_leave_candidates_never_a_guess(tmp_path: Path, cache: Path) -> None:
    shas = history(tmp_path / "repo", 16, 8)
    with git.private_clone(tmp_path / "repo") as clone:
        reader = Reader(clone, flaky=frozenset({shas[7], shas[8]}))
        over, _ = search(clone, shas[0], shas[-1], reader)
    assert over.first_bad is None
    assert set(over.candidates) == {shas[7], shas[8], shas[9]} or set(over.candidates) == {shas[7], shas[8]}


@pytest.mark.parametrize("good_bug,bad_bug", [(True, True), (False, False)])
def test_an_end_that_is_not_as_given_is_bad_input(tmp_path: Path, cache: Path, good_bug: bool, bad_bug: bool) -> None:
    shas = history(tmp_path / "repo", 8, 0 if good_bug else (4 if bad_bug else 99))
    with git.private_clone(tmp_path / "repo") as clone, pytest.raises(EndNotAsGiven) as caught:
        search(clone, shas[0], shas[-1], Reader(clone))
    assert ("does not hold at --good" if good_bug else "does not fail at --bad") in str(caught.value)


def _fingerprint(repo: Path) -> dict[str, object]:
    gitdir = repo / ".git"
    return {"refs": _git(repo, "for-each-ref"), "head": (gitdir / "HEAD").read_text(),
            "index": hashlib.sha256((gitdir / "index").read_bytes()).hexdigest(),
            "bisect": sorted(p.name for p in gitdir.iterdir() if p.name.startswith("BISECT")),
            "status": _git(repo, "status", "--porcelain"),
            "files": {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in repo.rglob("*") if p.is_file()
                      and ".git" not in p.parts}}


def test_the_users_repository_worktree_and_own_bisection_are_left_as_they_were(tmp_path: Path, cache: Path) -> None:
    repo = tmp_path / "repo"
    shas = history(repo, 12, 5)
    (repo / "state.txt").write_text("the user's uncommitted work\n")  # a dirty worktree
    _git(repo, "bisect", "start", "--no-checkout", shas[9], shas[1])  # and a bisection of their own
    before = _fingerprint(repo)
    with git.private_clone(repo) as clone:
        over, _ = search(clone, shas[0], shas[-1], Reader(clone))
    assert over == git.Ended(shas[5])
    assert _fingerprint(repo) == before
    assert clone.path.is_relative_to(cache) and not (clone.path / ".git" / "BISECT_LOG").exists()
    assert (clone.path / ".git/objects/info/alternates").read_text().strip() == str(repo / ".git/objects")


@pytest.mark.parametrize("rev", ["--output=/tmp/harness-owned", "-h", "no-such-branch", "HEAD:state.txt"])
def test_a_revision_that_names_no_commit_is_refused(tmp_path: Path, rev: str) -> None:
    history(tmp_path / "repo", 2, 1)
    with pytest.raises(git.GitError, match="names no commit"):
        git.commit(tmp_path / "repo", rev, "--good")
    assert not Path("/tmp/harness-owned").exists()


def test_a_range_git_bisect_cannot_search_is_refused(tmp_path: Path) -> None:
    shas = history(tmp_path / "repo", 3, 2)
    with pytest.raises(git.GitError, match="not an ancestor"):
        git.check_range(tmp_path / "repo", shas[3], shas[1])
    with pytest.raises(git.GitError, match="same commit"):
        git.check_range(tmp_path / "repo", shas[1], shas[1])
    with pytest.raises(git.GitError, match="not a git repository"):
        git.repository(tmp_path)


def test_bad_input_fails_in_a_second_with_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shas = history(tmp_path / "repo", 3, 2)
    out, repo = tmp_path / "results", str(tmp_path / "repo")
    for argv, said in ((["--kernel-src", str(tmp_path), "--good", "HEAD~1", "--bad", "HEAD"], "not a git repository"),
                       (["--kernel-src", repo, "--good", shas[2], "--bad", shas[1]], "not an ancestor"),
                       (["--kernel-src", repo, "--good", "v0", "--bad", "HEAD"], "names no commit"),
                       (["--kernel-src", repo, "--good", shas[0], "--bad", "HEAD", "--splat", "("],
                        "not a regular expression"),
                       (["--kernel-src", repo, "--good", shas[0], "--bad", "HEAD", "--retries", "-1"], "--retries")):
        assert main(["bisect", *argv, "--results-dir", str(out)]) == 2
        assert said in capsys.readouterr().err
    assert not out.exists()


# --- the checks, on run directories written here the way a run writes them ---

def _run(root: Path, outcomes: list[tuple[str, Outcome, str]], booted: bool = True, console: str = "",
         events: dict[str, list[dict]] | None = None) -> Path:
    root.mkdir(parents=True)
    write_results(root / "outcomes.json", [Result(t, o, r) for t, o, r in outcomes])
    Timings({}, [] if not booted else Timings.from_json({"boots": [{"boot_to_ssh_s": 2.0}]}).boots).write(
        root / "timings.json")
    (root / "vm-1").mkdir()
    (root / "vm-1" / "console.log").write_text(console)
    for name, evs in (events or {}).items():
        test = root / "tests" / name
        test.mkdir(parents=True)
        workload, case = name.split("-")
        (test / "program.json").write_text(json.dumps({"workload": workload, "case": case, "page_size": 4096,
                                                       "ranges": {"target": [0x10000, 0x20000]}}))
        (test / "events.json").write_text(json.dumps(evs))
    return root


def _ev(event: str) -> dict:
    return {"seq": 0, "pid": 1, "cpid": 1, "kind": "start", "event": event, "start": 0x10000, "end": 0x20000}


PASSED = [("suites/test_events.py::t[munmap/whole]", Outcome.PASS, "")]
OOPS = ("[    3.1] BUG: unable to handle page fault for address: 0000000000000010\n"
        "[    3.1] #PF: supervisor read access in kernel mode\n"
        "[    3.1] RIP: 0010:dmirror_do_read+0x4d/0x130 [test_hmm]\n"
        "[    3.2] Kernel panic - not syncing: Fatal exception\n")


def test_the_test_check(tmp_path: Path) -> None:
    check = Check("test")
    assert judge(check, _run(tmp_path / "a", PASSED), None, {}).term == GOOD
    bad = judge(check, _run(tmp_path / "b", [*PASSED, ("t2", Outcome.CRASH, "kernel crashed")]), None, {})
    assert bad == Verdict(BAD, "CRASH t2: kernel crashed")
    skipped = judge(check, _run(tmp_path / "c", [("t", Outcome.CRASH, "boot: kernel panic")], booted=False), None, {})
    assert skipped.term == SKIP and skipped.reason.startswith("did not boot: CRASH: boot: kernel panic")
    assert judge(check, _run(tmp_path / "d", []), None, {}).term == SKIP  # nothing ran: nothing decided
    unreachable = judge(check, _run(tmp_path / "e", [("t", Outcome.INFRA, "ssh down")]), None, {})
    assert unreachable.term == SKIP


def test_the_splat_check_also_judges_a_kernel_that_died_booting(tmp_path: Path) -> None:
    check = Check("splat", r"dmirror_do_read")
    died = _run(tmp_path / "a", [("t", Outcome.CRASH, "boot")], booted=False, console=OOPS)
    assert judge(check, died, None, {}).term == BAD
    assert judge(Check("splat", "WARNING in .*"), died, None, {}).term == SKIP
    assert judge(check, _run(tmp_path / "b", PASSED), None, {}).term == GOOD


def test_the_events_check_compares_with_the_good_commit_by_compares_rules(tmp_path: Path) -> None:
    check = Check("events", "munmap/*")
    good = _run(tmp_path / "good", PASSED, events={"munmap-whole": [_ev("UNMAP")], "madvise-dontneed": [_ev("CLEAR")]})
    same = _run(tmp_path / "same", PASSED, events={"munmap-whole": [_ev("UNMAP")], "madvise-dontneed": []})
    changed = _run(tmp_path / "changed", PASSED, events={"munmap-whole": [_ev("PROTECTION_VMA")]})
    other = _run(tmp_path / "other", PASSED, events={"madvise-dontneed": [_ev("CLEAR")]})
    assert judge(check, same, good, {}).term == GOOD  # madvise's change is not this check's
    verdict = judge(check, changed, good, {})
    assert verdict.term == BAD and "UNMAP x1 → PROTECTION_VMA x1" in verdict.reason
    assert judge(check, other, good, {}).term == SKIP  # no munmap workload ran: nothing to compare
    assert judge(Check("events", "madvise/*"), same, good, {}).term == BAD


def test_the_completeness_check(tmp_path: Path) -> None:
    name = "suites/test_migration.py::test_migration_invalidates_every_page_it_moves[x]"
    good = _run(tmp_path / "good", [(name, Outcome.PASS, "")])
    bad = _run(tmp_path / "bad", [(name, Outcome.FAIL, "page 0x10000 moved without an invalidation")])
    assert judge(Check("completeness"), bad, good, {}).term == BAD
    assert judge(Check("completeness"), good, good, {}).term == GOOD
    assert judge(Check("completeness"), _run(tmp_path / "none", PASSED), good, {}).term == SKIP


def test_the_culprit_as_kcidb(tmp_path: Path) -> None:
    commit = git.Commit("a" * 40, "mm/memory: a change", "A U Thor <a@example.org>", "2026-12-06T00:00:00+00:00",
                        ("mm/memory.c", "Documentation/x.rst"))
    parent = git.Commit("b" * 40, "before", "A", "2026-12-05T00:00:00+00:00", ())
    req = BisectRequest("v1", "v2", Check("events", "munmap/*"), suites=("suites/test_events.py",), k="munmap")
    steps = [Step(1, "good", parent, Verdict(GOOD, "as before")),
             Step(2, "bad", commit, Verdict(BAD, "munmap/whole: UNMAP x1 → PROTECTION_VMA x1"), build_s=12.0,
                  runs=[str(_run(tmp_path / "run", [("suites/test_events.py::t[munmap/whole]", Outcome.FAIL,
                                                      "saw 0")]))])]
    result = BisectResult(tmp_path, tmp_path / "repo", 1, steps, commit, [], 60.0,
                          req.argv(f"{commit.sha}^", commit.sha, tmp_path / "repo"))
    doc = valid(kcidb(result, req))
    (checkout,) = doc["checkouts"]
    assert checkout["git_commit_hash"] == commit.sha and checkout["misc"]["mm_and_drivers"] == ["mm/memory.c"]
    assert doc["incidents"][0]["build_id"] == doc["builds"][0]["id"]
    assert "PROTECTION_VMA" in doc["issues"][0]["misc"]["reason"]
    failed = kcidb_test_path("suites/test_events.py::t[munmap/whole]")
    assert [(t["path"], t["status"]) for t in doc["tests"]] == [(failed, "FAIL")]
    text = result.text()
    assert f"first bad commit: {commit.sha}" in text and "mm/ and drivers/: mm/memory.c" in text
    assert f"--good '{commit.sha}^' --bad {commit.sha} --events 'munmap/*' -k munmap suites/test_events.py" in text


def test_runs_that_disagree_make_a_flaky_step_never_a_verdict() -> None:
    good, bad, unbooted = Verdict(GOOD, "passed"), Verdict(BAD, "FAIL t"), Verdict(SKIP, "did not boot: TIMEOUT")
    assert combined([good, good]) == good and combined([bad, bad]) == bad
    flaky = combined([bad, good])
    assert flaky.term == SKIP and flaky.reason == "FLAKY: bad, good in 2 runs of the same build"
    assert combined([unbooted, bad]) == bad  # a run that never booted decides nothing
    assert combined([unbooted, unbooted]) == unbooted
    assert combined([good, unbooted, bad]).reason.startswith("FLAKY: good, skip, bad")


def test_a_check_needs_its_pattern() -> None:
    with pytest.raises(UserError):
        Check("events")
    with pytest.raises(UserError):
        Check("coverage")


def test_a_new_failure_of_a_git_tree_that_moved_says_which_bisect_finds_its_commit(tmp_path: Path) -> None:
    tree, build = tmp_path / "linux", tmp_path / "build"
    a, b = "1" * 40, "2" * 40
    runs = {name: load_run(plain_run(tmp_path / name, identity, tree, build, {"test_munmap": outcome}))
            for name, identity, outcome in (("night1", f"git:{a}", "PASS"), ("night2", f"git:{b}", "FAIL"),
                                            ("dirty", f"git:{b}-dirty", "FAIL"), ("same", f"git:{a}", "FAIL"))}
    found = find_regressions(runs["night1"], runs["night2"])
    (failure,) = found["new_failures"]
    assert failure["bisect"] == (f"harness bisect --kernel-src {tree} --good {a} --bad {b} "
                                 "suites/test_events.py::test_munmap")
    assert f"find the commit: {failure['bisect']}" in format_regressions(found)
    for other in ("dirty", "same"):  # uncommitted changes, or the same commit: no range for git bisect
        assert "bisect" not in find_regressions(runs["night1"], runs[other])["new_failures"][0]


def test_a_compare_of_a_commit_range_says_which_bisect_finds_the_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shas = history(repo, 4, 2)
    _git(repo, "checkout", "-q", shas[1])  # the compared base: HEAD is the range's start
    test = "suites/test_events.py::t[munmap/whole]"
    groups = [("suites", "default", ("suites/test_events.py",)), ("driver-kvm", "kvm", ("suites/test_kvm.py",))]
    runs = [_run(tmp_path / "suites", [(test, Outcome.FAIL, "saw 0")]), _run(tmp_path / "kvm", PASSED)]
    diff = compare.Comparison("base", "patched", outcomes=[
        compare.OutcomeChange(test, Outcome.PASS, Outcome.FAIL, "saw 0", "regressed")])
    hint = after_compare(repo, (f"{shas[1]}..{shas[4]}",), groups, runs, diff)
    assert hint == (f"harness bisect --kernel-src {repo} --good {shas[1]} --bad {shas[4]} "
                    f"'{test}'")
    splat = compare.Comparison("base", "patched", new_splats=["WARNING in dmirror_fault"])
    runs[1].joinpath("vm-1", "console.log").write_text(
        "[    2.0] WARNING: CPU: 1 PID: 90 at lib/test_hmm.c:1 dmirror_fault+0x1/0x2 [test_hmm]\n"
        "[    2.0] ---[ end trace 0000000000000000 ]---\n")
    assert after_compare(repo, (f"{shas[1]}..{shas[4]}",), groups, runs, splat).endswith(
        "--splat '^WARNING\\ in\\ dmirror_fault$' --machine kvm suites/test_kvm.py")
    # not the base's HEAD, not a range, two specs: the range is not what the comparison added
    for patch in ((f"{shas[0]}..{shas[4]}",), ("0001-a.patch",), (f"{shas[1]}..{shas[4]}", "x.patch")):
        assert after_compare(repo, patch, groups, runs, diff) == ""
