"""`harness bisect` on real kernels: tests/bisect_history.py's 40 commits on Debian's 6.12 (the tree in the
cache), two culprits of its own and a commit in the middle that does not build. Each bisection must name its
culprit within ⌈log2 40⌉ + 2 = 8 builds, skip the broken commit with the compiler's words, keep each
incremental step under two minutes, leave the repository as it was, and write a log `git bisect replay` takes.

    make test-bisect        (both, about 5 minutes warm; not in `make test`: see the README)
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import paths
from harness.bisect import git
from harness.kernel.source import debian_tree
from tests.bisect_history import BROKEN, COMMITS, History, make_history
from tests.test_kcidb import valid

pytestmark = pytest.mark.e2e
BUDGET = math.ceil(math.log2(COMMITS)) + 2
STEP_LIMIT_S = 120  # an incremental step's build: the bound, with the harness's own timing


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    made = make_history(tmp_path_factory.mktemp("bisect") / "linux", debian_tree("6.12").path)
    yield made
    # the clone and its build directory (about 2.5 GB): one per repository path, and this path is gone after
    clone = git.clone_dir(Path(made.repo))
    for link in clone.parent.parent.parent.glob("builds/*"):
        if link.is_symlink() and str(link.readlink()).startswith(str(clone)):
            link.unlink()
    shutil.rmtree(clone, ignore_errors=True)


def _state(repo: Path) -> dict[str, str]:
    run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True).stdout  # noqa: E731
    return {"refs": run("for-each-ref"), "head": run("rev-parse", "HEAD"),
            "index": hashlib.sha256((repo / ".git/index").read_bytes()).hexdigest(),
            "bisect": " ".join(sorted(p.name for p in (repo / ".git").iterdir() if p.name.startswith("BISECT")))}


def _bisect(history: History, out: Path, *argv: str) -> dict:
    before = _state(Path(history.repo))
    done = subprocess.run([sys.executable, "-m", "harness.cli", "bisect", "--kernel-src", history.repo, "--good",
                           history.base, "--bad", "main", "--results-dir", str(out), *argv], cwd=paths.REPO,
                          capture_output=True, text=True, timeout=1800)
    assert _state(Path(history.repo)) == before, "the user's repository changed"
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    report = json.loads((out / "bisect.json").read_text())
    steps = report["steps"]
    # the budget bounds the kernels built for a verdict; the broken commit is one build more, skipped (git then tests
    # a commit beside it, chosen by its own PRNG: 7 or 8 verdict builds here, depending on the commit ids)
    assert report["builds"] <= BUDGET, f"{report['builds']} builds for {COMMITS} commits: {out / 'culprit.txt'}"
    assert report["broken_builds"] == 1, report
    broken = [s for s in steps if s["commit"]["sha"] == history.broken]
    assert broken and broken[0]["verdict"] == "skip", "git's first choice is the broken commit: it must be skipped"
    assert "mm/mremap.c" in broken[0]["reason"] and "error: expected expression" in broken[0]["reason"]
    for s in steps[1:]:  # every build after the first is incremental
        assert s["build_s"] < STEP_LIMIT_S, f"step {s['n']} took {s['build_s']} s to build"
    assert all(Path(r, "outcomes.json").exists() for s in steps for r in s["runs"])
    # the history changes built-in code only: no module is relinked, so every step boots the first one's image
    images = {json.loads(Path(r, "kernel.json").read_text())["image"] for s in steps for r in s["runs"]}
    assert len(images) == 1, images
    valid(json.loads((out / "kcidb.json").read_text()))
    _replays(history, out / "bisect.log", report["first_bad"]["sha"])
    return report


def _replays(history: History, log: Path, first_bad: str) -> None:
    """`git bisect replay` of the log, in a clone of the user's repository, ends at the same commit."""
    other = Path(history.repo).with_name("replay")
    shutil.rmtree(other, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", history.repo, str(other)], check=True)
    replay = subprocess.run(["git", "-C", str(other), "bisect", "replay", str(log)], capture_output=True, text=True)
    assert f"{first_bad} is the first bad commit" in replay.stdout, replay.stdout + replay.stderr
    shutil.rmtree(other)


def test_a_changed_event_is_bisected_to_its_commit(history: History, tmp_path: Path) -> None:
    report = _bisect(history, tmp_path / "events", "--events", "munmap/*", "suites/test_events.py", "-k", "munmap")
    culprit = report["first_bad"]
    assert culprit["sha"] == history.event_culprit, json.dumps(culprit)
    assert culprit["author"] == "Event Changer <event.changer@example.org>" and culprit["mm_and_drivers"] == [
        "mm/memory.c"]
    bad = next(s for s in report["steps"] if s["commit"]["sha"] == history.event_culprit)
    assert "UNMAP x1 → PROTECTION_VMA x1" in bad["reason"]


def test_a_skipped_invalidation_is_bisected_to_its_commit_by_a_failing_test(history: History,
                                                                            tmp_path: Path) -> None:
    # test_events' madvise/dontneed expects CLEAR over the range (mm/memory.c:zap_page_range_single); the
    # munmap change at commit 13 does not touch it, so only the skip at 29 fails it
    report = _bisect(history, tmp_path / "test", "suites/test_events.py", "-k", "madvise and dontneed")
    assert report["first_bad"]["sha"] == history.skip_culprit, json.dumps(report["first_bad"])
    assert history.commits.index(history.skip_culprit) > BROKEN
