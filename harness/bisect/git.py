"""The git side of a bisection: a private clone of the user's repository, driven by `git bisect` itself.

The user's repository is only read. The clone (`git clone --shared --no-checkout`: its objects come
from the user's through git's alternates, nothing is copied) lives in the cache, one per repository,
and `git bisect` runs there: the user's worktree, index, refs and bisect state are never touched, and
their own bisection can go on meanwhile. The clone's build directory lives inside it (an owned tree:
harness/kernel/build.py:build_dir), so its first build takes the Debian tree's ccache entries for
every file the two share, and each step after rebuilds what `git checkout` changed.

Every revision a user gives is resolved once, here, to a full commit id (`--end-of-options`: a
revision is never taken for an option); only ids reach the other git commands.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, locks, paths
from harness.errors import UserError
from harness.kernel.build import content_key
from harness.kernel.source import BISECT_CLONES

FIRST_BAD = re.compile(r"^([0-9a-f]{40}) is the first bad commit", re.MULTILINE)
ONLY_SKIPPED = "There are only 'skip'ped commits left to test."
SHA = re.compile(r"^[0-9a-f]{40}$")
TOPS = ("mm/", "drivers/")  # the files of a culprit a maintainer of this tool's subject reads first


class GitError(UserError):
    pass


def git(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise GitError(f"git {args[0]} in {repo} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def repository(path: Path) -> Path:
    """The top of the git repository at `path` (a worktree or a bare repository), or a clear error."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise GitError(f"{path}: no such directory (--kernel-src must be a git repository of a kernel tree)")
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "--absolute-git-dir"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise GitError(f"{path} is not a git repository: bisect needs the kernel tree's history "
                       f"({proc.stderr.strip()})")
    return path


def commit(repo: Path, rev: str, what: str) -> str:
    """The full id of the commit `rev` names in `repo`."""
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "--end-of-options",
                           f"{rev}^{{commit}}"], capture_output=True, text=True)
    if proc.returncode != 0 or not SHA.match(sha := proc.stdout.strip()):
        raise GitError(f"{what} {rev!r} names no commit in {repo}")
    return sha


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str  # "Name <mail>"
    date: str  # the author date, ISO 8601
    files: tuple[str, ...]  # what it changes against its first parent

    def touched(self, tops: tuple[str, ...] = TOPS) -> list[str]:
        return [f for f in self.files if f.startswith(tops)]

    def to_json(self) -> dict[str, object]:
        return {"sha": self.sha, "subject": self.subject, "author": self.author, "date": self.date,
                "files": list(self.files), "mm_and_drivers": self.touched()}


def describe(repo: Path, sha: str) -> Commit:
    sha_, subject, author, date = git(repo, "show", "-s", "--format=%H%x00%s%x00%an <%ae>%x00%aI", sha).rstrip(
        "\n").split("\0")
    files = git(repo, "diff-tree", "-r", "--no-commit-id", "--name-only", "-m", "--first-parent", "--root", sha)
    return Commit(sha_, subject, author, date, tuple(files.split()))


def count(repo: Path, good: str, bad: str) -> int:
    """Commits in good..bad: what the bisection chooses among."""
    return int(git(repo, "rev-list", "--count", f"{good}..{bad}").strip())


def check_range(repo: Path, good: str, bad: str) -> None:
    if good == bad:
        raise GitError(f"--good and --bad are the same commit ({good[:12]}): nothing to bisect")
    if subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", good, bad]).returncode != 0:
        raise GitError(f"--good {good[:12]} is not an ancestor of --bad {bad[:12]}: git bisect looks for the "
                       "first bad commit after a good one (swap them to find the commit that fixed it)")


class Clone:
    """The harness's clone of one repository, where `git bisect` runs; held by one bisection at a time."""

    def __init__(self, path: Path):
        self.path = path

    def checkout(self, sha: str) -> None:
        git(self.path, "checkout", "--quiet", "--force", "--detach", sha)

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD").strip()

    def start(self, bad: str, good: str) -> str:
        git(self.path, "bisect", "reset", check=False)  # a bisection a killed run left
        return git(self.path, "bisect", "start", bad, good)  # and checks out the first commit to test

    def mark(self, term: str, sha: str) -> str:
        """`git bisect good|bad|skip SHA`; git checks out the next commit to test and says so."""
        assert term in ("good", "bad", "skip")
        return git(self.path, "bisect", term, sha, check=False)

    def log(self) -> str:
        return git(self.path, "bisect", "log")

    def reset(self) -> None:
        """End the bisection where it stands (no checkout back: the build directory stays what it built)."""
        git(self.path, "bisect", "reset", "HEAD", check=False)


@dataclass(frozen=True)
class Ended:
    """How `git bisect` ended: one first bad commit, or the candidates skipped commits leave."""

    first_bad: str | None
    candidates: tuple[str, ...] = ()


def ended(output: str) -> Ended | None:
    """The end of the bisection in git's words after a mark, or None while it goes on."""
    if m := FIRST_BAD.search(output):
        return Ended(m[1])
    if ONLY_SKIPPED in output:
        return Ended(None, tuple(re.findall(r"^([0-9a-f]{40})$", output, re.MULTILINE)))
    return None


def clone_dir(repo: Path) -> Path:
    """Where the cache keeps the clone of `repo` (by its path) and, inside it, its build directories."""
    return paths.cache_root().joinpath(*BISECT_CLONES) / f"{repo.name}-{content_key(str(repo))}"


@contextmanager
def private_clone(repo: Path) -> Iterator[Clone]:
    """The cache's clone of `repo` (made on first use), held for the block: one bisection per repository."""
    dest = clone_dir(repo)
    key = dest.name.rsplit("-", 1)[-1]
    with locks.locked(paths.cache_root() / "locks" / f"bisect-{key}.lock", f"bisecting {repo} in {dest}"):
        if not (dest / ".git").is_dir():
            print(f"cloning {repo} into {dest} (objects shared, not copied) ...", flush=True)
            with atomic.staged_dir(dest) as tmp:
                subprocess.run(["git", "clone", "--quiet", "--shared", "--no-checkout", "--", str(repo), str(tmp)],
                               check=True, capture_output=True)
        clone = Clone(dest)
        try:
            yield clone
        finally:
            clone.reset()
