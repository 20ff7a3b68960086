"""A git history on top of Debian's 6.12 for `harness bisect` to search: 40 commits, two of them culprits.

    python tests/bisect_history.py DEST     # prints the commits of interest as JSON

Commit 0 is Debian's tree as it is (its files, not its build directories). Then 40 commits, each a
comment at the end of one built-in .c file under mm/ or drivers/ (what a maintainer's branch is full of:
every step recompiles a file or two), except:
  13  EVENT: unmap_vmas() announces munmap as PROTECTION_VMA (tests/data/patches/planted/wrong-event-munmap.patch)
  20  BROKEN: mm/mremap.c does not compile
  21  its fix
  29  SKIP: MADV_DONTNEED sends no invalidation (tests/data/patches/planted/skip-notifier-dontneed.patch)
git bisect's first choice in 0..40 is commit 20, so both bisections meet the broken build.

The repository is written through git's plumbing (hash-object, update-index, apply --cached, commit-tree):
its own worktree is left empty and Debian's tree is only read. Dates and authors are fixed, so the same
tree always gives the same commit ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLANTED = HERE / "data/patches/planted"
COMMITS = 40
EVENT, BROKEN, FIX, SKIP = 13, 20, 21, 29
# Built in by configs/fragments (base and mmu-notifier-on) on 6.12: a comment in one recompiles one object
TOUCHED = ("mm/mprotect.c", "mm/mremap.c", "mm/madvise.c", "mm/msync.c", "mm/mlock.c", "mm/mincore.c",
           "mm/pagewalk.c", "mm/util.c", "mm/mmu_notifier.c", "drivers/virtio/virtio.c", "drivers/char/mem.c")
BREAKS = b"\nint bisect_history_broken = ;  /* does not compile */\n"


@dataclass(frozen=True)
class History:
    repo: str
    base: str  # commit 0: Debian's tree
    head: str  # commit 40
    event_culprit: str  # the commit that changes munmap's event
    skip_culprit: str  # the commit that skips MADV_DONTNEED's invalidation
    broken: str  # the commit that does not build
    commits: tuple[str, ...]  # 0..40


class _Git:
    """git in DEST, with fixed identities and dates: commit n is dated n hours after a fixed time."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}

    def __call__(self, *args: str, data: bytes | None = None, who: str = "Harness Tests", n: int = 0) -> bytes:
        stamp = f"{1764979200 + 3600 * n} +0000"
        mail = who.lower().replace(" ", ".") + "@example.org"
        env = {**self.env, "GIT_AUTHOR_NAME": who, "GIT_AUTHOR_EMAIL": mail, "GIT_AUTHOR_DATE": stamp,
               "GIT_COMMITTER_NAME": who, "GIT_COMMITTER_EMAIL": mail, "GIT_COMMITTER_DATE": stamp}
        done = subprocess.run(["git", "-C", str(self.repo), "-c", "core.compression=1", *args], input=data, env=env,
                              capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args[:3])} failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout

    def edit(self, name: str, change: Callable[[bytes], bytes]) -> None:
        """The index's `name` changed, its worktree (none) untouched."""
        blob = self("hash-object", "-w", "--stdin", data=change(self("show", f":{name}"))).decode().strip()
        self("update-index", "--cacheinfo", f"100644,{blob},{name}")

    def commit(self, subject: str, n: int, parent: str | None, who: str = "Harness Tests") -> str:
        tree = self("write-tree").decode().strip()
        return self("commit-tree", tree, *(["-p", parent] if parent else []), "-m", subject, who=who,
                    n=n).decode().strip()


def make_history(dest: Path, tree: Path) -> History:
    dest.mkdir(parents=True)
    git = _Git(dest)
    git("init", "--quiet", "--initial-branch=main")
    # Debian's tree as the index's content; -f: every file, .gitignore's patterns or not (it is the tree)
    # not the harness's in-tree builds and stamps, nor Kbuild's .tmp_PID (its try-run makes and removes them in the
    # tree while another config of it builds: git add then lost the race for one, "unable to stat")
    git(f"--work-tree={tree}", "add", "-f", "-A", "--", ".", ":(exclude,glob)harness-build-*",
        ":(exclude,glob).harness-*", ":(exclude,glob).tmp_*")
    commits = [git.commit("Debian's linux-source-6.12 as it is", 0, None)]
    for n in range(1, COMMITS + 1):
        who = "Harness Tests"
        if n in (EVENT, SKIP):
            patch = PLANTED / ("wrong-event-munmap.patch" if n == EVENT else "skip-notifier-dontneed.patch")
            git(f"--work-tree={tree}", "apply", "--cached", str(patch))
            subject, who = _subject(patch), ("Event Changer" if n == EVENT else "Skip Planter")
        elif n == BROKEN:
            git.edit("mm/mremap.c", lambda s: s + BREAKS)
            subject = "mm/mremap: a line that does not compile"
        elif n == FIX:
            git.edit("mm/mremap.c", lambda s: s.replace(BREAKS, b""))
            subject = "mm/mremap: make it compile again"
        else:
            name = TOUCHED[n % len(TOUCHED)]
            git.edit(name, lambda s, n=n: s + f"/* bisect history: commit {n} */\n".encode())
            subject = f"{name.removesuffix('.c')}: a comment ({n})"
        commits.append(git.commit(subject, n, commits[-1], who))
    git("update-ref", "refs/heads/main", commits[-1])
    return History(str(dest), commits[0], commits[-1], commits[EVENT], commits[SKIP], commits[BROKEN], tuple(commits))


def _subject(patch: Path) -> str:
    lines = patch.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("Subject: "))
    subject = lines[i].removeprefix("Subject: [PATCH] ")
    while lines[i + 1].startswith(" "):
        i += 1
        subject += lines[i]
    return subject


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    from harness.kernel.source import debian_tree

    print(json.dumps(asdict(make_history(Path(sys.argv[1]), debian_tree("6.12").path)), indent=1))
