"""The `bisect` use case: from a verdict that fails at one commit and holds at an older one to the commit that
caused it, in the user's git repository, judged by the harness's own checks (harness/bisect/judge.py).

Both ends are built and judged first: the good commit's run is also the reference an event or completeness
check compares each step with. Then `git bisect` (in the harness's private clone: harness/bisect/git.py)
chooses each commit; it is built on the build directory of the commit before, run, judged, and marked good,
bad or skip. A commit that does not build or boot is skipped, with the reason. With --retries N each verdict
is seen 1+N times; one that flips is reported FLAKY and skipped, never guessed. Everything lands in one
results directory: steps/NN-ROLE-SHA/run-K/ (each an ordinary run directory), bisect.json, bisect.log
(`git bisect replay` takes it), culprit.txt and kcidb.json.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import paths
from harness.app.kernel import KernelChoice
from harness.app.run import RunRequest, run_on
from harness.atomic import check_output_dir, write_text
from harness.bisect import git
from harness.bisect.judge import SKIP, Check, Verdict, boot_s, combined, judge
from harness.bisect.search import EndNotAsGiven, search
from harness.checks import expectations
from harness.errors import InfraError, UserError
from harness.kernel.arch import HOST
from harness.kernel.build import BuildError, content_key
from harness.kernel.prepare import Prepared, prepare
from harness.results import compare, rundir
from harness.results.compare import COMPLETENESS
from harness.results.kcidb import ORIGIN, STATUS, VERSION, test_path
from harness.results.model import Result, read_results
from harness.results.splat import find_splats
from harness.vm.machine import check_devices, load_profile

EXIT_FOUND, EXIT_UNDECIDED = 0, 1


@dataclass(frozen=True)
class BisectRequest:
    good: str
    bad: str
    check: Check
    kernel_src: str | None = None  # the git repository (None: the working directory)
    suites: tuple[str, ...] = ()
    k: str | None = None
    notifier: str = "on"
    fragments: tuple[str, ...] = ()
    machine: str = "default"
    retries: int = 1
    results_dir: Path | None = None
    boot_timeout: float | None = None
    arch: str = HOST

    def argv(self, good: str, bad: str, repo: Path) -> list[str]:
        """The command that runs this bisection (on another range: good..bad)."""
        return ["harness", "bisect", "--kernel-src", str(repo), "--good", good, "--bad", bad, *self.check.argv(),
                *(["-k", self.k] if self.k else []), *(["--notifier", self.notifier] if self.notifier != "on" else []),
                *(a for f in self.fragments for a in ("--fragment", f)),
                *(["--machine", self.machine] if self.machine != "default" else []),
                *(["--arch", self.arch] if self.arch != HOST else []),
                *(["--retries", str(self.retries)] if self.retries != 1 else []), *self.suites]


@dataclass
class Step:
    """One commit built and judged: an end (good, bad) or a commit git bisect chose."""

    n: int
    role: str  # good | bad | step
    commit: git.Commit
    verdict: Verdict
    tally: list[str] = field(default_factory=list)  # each run's own verdict
    runs: list[str] = field(default_factory=list)  # their run directories
    build_s: float = 0.0  # this step's kernel: configure, build, image
    built: bool = False  # a kernel was compiled (or failed to) for it
    broken: bool = False  # its build failed: skipped
    boot_s: float = 0.0  # boot to SSH of its first run
    test_s: float = 0.0  # its runs' wall time beside their boots

    def line(self) -> str:
        how = f"built {self.build_s:.0f} s, boot {self.boot_s:.1f} s, tests {self.test_s:.0f} s"
        return (f"{self.n:2d} {self.role:4s} {self.commit.sha[:12]} {self.commit.subject[:60]!r}: {how}: "
                f"{self.verdict.term.upper()}: {self.verdict.reason}")

    def to_json(self) -> dict[str, object]:
        return {"n": self.n, "role": self.role, "commit": self.commit.to_json(), "verdict": self.verdict.term,
                "reason": self.verdict.reason, "tally": self.tally, "runs": self.runs, "build_s": self.build_s,
                "built": self.built, "broken": self.broken, "boot_s": self.boot_s, "test_s": self.test_s}


@dataclass
class BisectResult:
    out_dir: Path
    repo: Path
    commits: int  # in good..bad
    steps: list[Step]
    first_bad: git.Commit | None
    candidates: list[git.Commit]  # when skipped commits leave more than one
    elapsed_s: float
    command: list[str]  # a one-commit bisection that shows the culprit again

    @property
    def exit_code(self) -> int:
        return EXIT_FOUND if self.first_bad else EXIT_UNDECIDED

    @property
    def builds(self) -> int:
        """Kernels built for a verdict: what ⌈log2 n⌉ + 2 bounds (a skipped commit that did not build is apart)."""
        return sum(s.built and not s.broken for s in self.steps)

    @property
    def broken_builds(self) -> int:
        """Commits that did not build: each is skipped, and git then tests one beside it."""
        return sum(s.broken for s in self.steps)

    @property
    def budget(self) -> int:
        """⌈log2 n⌉ + 2: the bisection proper, and both ends."""
        return math.ceil(math.log2(max(self.commits, 1))) + 2

    def text(self) -> str:
        broken = f", and {self.broken_builds} commit(s) that did not build" if self.broken_builds else ""
        lines = [f"bisect: {self.commits} commit(s) in {self.repo}; {self.builds} build(s) "
                 f"(⌈log2 n⌉ + 2 = {self.budget}){broken}; {self.elapsed_s:.0f} s", *(s.line() for s in self.steps),
                 ""]
        if c := self.first_bad:
            lines += [f"first bad commit: {c.sha}", f"    {c.subject}", f"    author: {c.author}, {c.date}",
                      *([f"    mm/ and drivers/: {', '.join(c.touched())}"] if c.touched() else []),
                      f"    files: {', '.join(c.files[:12])}{' ...' if len(c.files) > 12 else ''}",
                      f"    reason: {next(s.verdict.reason for s in self.steps if s.commit.sha == c.sha)}"]
        else:
            lines += ["no single first bad commit: skipped commits (did not build or boot, or FLAKY) leave "
                      f"{len(self.candidates)} candidate(s):",
                      *(f"    {c.sha[:12]} {c.subject}" for c in self.candidates)]
        lines += ["", f"reproduce: {shlex.join(self.command)}",
                  f"replay: git -C {self.repo} bisect replay {self.out_dir / 'bisect.log'}"]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, object]:
        return {"repository": str(self.repo), "commits": self.commits, "builds": self.builds,
                "broken_builds": self.broken_builds, "budget": self.budget,
                "elapsed_s": round(self.elapsed_s, 1), "steps": [s.to_json() for s in self.steps],
                "first_bad": self.first_bad.to_json() if self.first_bad else None,
                "candidates": [c.to_json() for c in self.candidates], "command": self.command}


def run_bisect(req: BisectRequest) -> BisectResult:
    """Judge both ends, bisect between them, write the report files; the result says what was found."""
    if req.retries < 0:
        raise UserError("--retries must be 0 or more")
    repo = git.repository(Path(req.kernel_src or "."))
    good, bad = git.commit(repo, req.good, "--good"), git.commit(repo, req.bad, "--bad")
    git.check_range(repo, good, bad)
    check_output_dir(Path(req.results_dir or paths.results_root()))
    check_devices(load_profile(req.machine, req.arch))
    commits = git.count(repo, good, bad)
    out_dir = rundir.new_run_dir(req.results_dir)
    started = time.monotonic()
    print(f"bisect: {commits} commit(s) from {good[:12]} (good) to {bad[:12]} (bad) in {repo}; "
          f"looking for {req.check.describe()}; results: {out_dir}", file=sys.stderr, flush=True)
    with git.private_clone(repo) as clone:
        bisector = _Bisector(req, clone, out_dir)
        try:
            over, log = search(clone, good, bad, bisector.judge)
        except EndNotAsGiven as e:
            raise EndNotAsGiven(f"{e} (its runs: {out_dir / 'steps'})") from None
    write_text(out_dir / "bisect.log", log)
    first_bad = git.describe(repo, over.first_bad) if over.first_bad else None
    command = req.argv(f"{over.first_bad}^", over.first_bad, repo) if over.first_bad else req.argv(good, bad, repo)
    result = BisectResult(out_dir, repo, commits, bisector.steps, first_bad,
                          [git.describe(repo, c) for c in over.candidates], time.monotonic() - started, command)
    write_text(out_dir / "bisect.json", json.dumps(result.to_json(), indent=1))
    write_text(out_dir / "culprit.txt", result.text())
    if first_bad:
        write_text(out_dir / "kcidb.json", json.dumps(kcidb(result, req), indent=1))
    return result


class _Bisector:
    def __init__(self, req: BisectRequest, clone: git.Clone, out_dir: Path):
        self.req, self.clone, self.out_dir = req, clone, out_dir
        self.steps: list[Step] = []
        self.reference: Path | None = None  # the good commit's first run
        self.cases: dict[str, expectations.Case] = {}  # the tree's event expectations: they name call sites

    def judge(self, sha: str, role: str) -> Verdict:
        """Build `sha` on the previous step's build directory, run the suites 1+retries times, judge each run."""
        return self._step(sha, role).verdict

    def _step(self, sha: str, role: str) -> Step:
        req = self.req
        commit = git.describe(self.clone.path, sha)
        step = Step(len(self.steps) + 1, role, commit, Verdict(SKIP, ""))
        self.steps.append(step)
        step_dir = self.out_dir / "steps" / f"{step.n:02d}-{role}-{sha[:12]}"
        _say(f"bisect: {step.n:2d} {role} {sha[:12]} {commit.subject[:60]!r}: building ...")
        began = time.monotonic()
        try:
            prepared = prepare(str(self.clone.path), req.notifier, fragments=req.fragments, arch=req.arch)
        except InfraError:
            raise
        except UserError as e:
            if role != "step":
                raise UserError(f"the --{role} commit {sha[:12]} does not build: {e}") from None
            step.build_s, step.built = round(time.monotonic() - began, 1), isinstance(e, BuildError)
            step.broken = step.built
            write_text(kept := step_dir / "build-error.txt", f"{e}\n")
            lines = str(e).splitlines()
            said = next((line.strip() for line in lines if " error: " in line), lines[0])  # the compiler's
            step.verdict = Verdict(SKIP, f"did not build: {said[:300]} ({kept})")
            _say(step.line())
            return step
        step.build_s, step.built = round(time.monotonic() - began, 1), prepared.timings.get("kernel_s", 0) >= 1
        if not self.cases:
            self.cases = dict(expectations.load(prepared.tree.series))
        verdicts = [self._run(step, prepared, step_dir / f"run-{k}") for k in range(1, req.retries + 2)]
        step.verdict = combined(verdicts)
        _say(step.line())
        return step

    def _run(self, step: Step, prepared: Prepared, run_dir: Path) -> Verdict:
        req = self.req
        began = time.monotonic()
        kernel = KernelChoice(str(self.clone.path), req.notifier, req.fragments, req.arch)
        result = run_on(RunRequest(kernel, req.machine, req.suites, run_dir, req.k, req.boot_timeout, quiet=True,
                                   reruns=0),  # bisect sees a verdict 1 + --retries times itself
                        prepared)
        wall, booted = time.monotonic() - began, boot_s(result.run_dir)
        # The good end's first run is what the events and completeness checks compare every run with (its own
        # retries too: events that differ between two runs of one build would make every verdict a guess)
        self.reference = self.reference or result.run_dir
        verdict = judge(self.req.check, result.run_dir, self.reference, self.cases)
        step.tally.append(verdict.term)
        step.runs.append(str(result.run_dir))
        step.boot_s = step.boot_s or booted
        step.test_s = round(step.test_s + wall - booted, 1)
        return verdict


def after_compare(given: Path, patch: tuple[str, ...], groups: list[tuple[str, str, tuple[str, ...]]],
                  patched_runs: list[Path], diff: compare.Comparison, notifier: str = "on",
                  fragments: tuple[str, ...] = (), arch: str = HOST) -> str:
    """The `harness bisect` that finds the commit of a series behind what `harness compare` found, or "".

    Only for a series given as a commit range A..B of a git base whose HEAD is A: the commits of the range are
    then exactly what the patched side added, and A is the base as compared. The check is the first thing
    the comparison found (a regression, a new splat, a failed completeness check, a changed event), run on
    the group (suites and machine) where it was found."""
    if len(patch) != 1 or ".." not in patch[0] or Path(patch[0]).exists() or not (given / ".git").exists():
        return ""
    try:
        good, bad = (git.commit(given, rev, "--patch") for rev in patch[0].split("..", 1))
        if good != git.commit(given, "HEAD", "the base"):
            return ""
    except git.GitError:
        return ""
    found: list[tuple[Check, Callable[[Path], bool]]] = []
    if diff.regressions:
        test = diff.regressions[0].test
        found.append((Check("test"), lambda run: test in {r.test for r in _results(run)}))
    if diff.new_splats:
        title = diff.new_splats[0]
        found.append((Check("splat", f"^{re.escape(title)}$"), lambda run: any(
            title == s.title for log in rundir.RunDir(run).console_logs() for s in find_splats(log.read_text(
                errors="replace")))))
    if diff.completeness.get("patched"):
        found.append((Check("completeness"), lambda run: any(COMPLETENESS in r.test for r in _results(run))))
    if diff.events:
        test = diff.events[0].test
        found.append((Check("events", diff.events[0].case), lambda run: test in {r.test for r in _results(run)}))
    for check, has in found[:1]:
        for (_, group_machine, suites), run in zip(groups, patched_runs, strict=True):
            if has(run):
                only = (diff.regressions[0].test,) if check.kind == "test" else suites
                return shlex.join(BisectRequest(good, bad, check, str(given), only, None, notifier, fragments,
                                                group_machine, arch=arch).argv(good, bad, given))
    return ""


def kcidb(result: BisectResult, req: BisectRequest) -> dict[str, object]:
    """The culprit in KCIDB v5.3: its checkout and build, an issue (the check that failed), and the incident."""
    c = result.first_bad
    assert c is not None
    culprit = next(s for s in result.steps if s.commit.sha == c.sha)
    checkout_id = f"{ORIGIN}:git:{c.sha}"
    build_id = f"{checkout_id}:{content_key(req.notifier, *req.fragments)}"
    issue_id = f"{ORIGIN}:bisect:{content_key(req.check.kind, req.check.pattern, c.sha)}"
    return {"version": VERSION,
            "checkouts": [{"id": checkout_id, "origin": ORIGIN, "git_commit_hash": c.sha, "git_commit_name": c.subject,
                           "comment": f"first bad commit: {c.subject}", "valid": True,
                           "misc": {"repository": str(result.repo), "author": c.author, "date": c.date,
                                    "mm_and_drivers": c.touched()}}],
            "builds": [{"id": build_id, "checkout_id": checkout_id, "origin": ORIGIN, "architecture": req.arch,
                        "compiler": "gcc", "status": "PASS", "duration": culprit.build_s,
                        "command": shlex.join(req.argv(f"{c.sha}^", c.sha, result.repo)),
                        "misc": {"notifier": req.notifier, "fragments": list(req.fragments)}}],
            "tests": [{"id": f"{build_id}:{content_key(run, r.test)}", "build_id": build_id, "origin": ORIGIN,
                       "path": test_path(r.test), "status": STATUS[r.outcome], "comment": r.reason[:1000]}
                      for run in culprit.runs[:1] for r in _results(Path(run))],
            "issues": [{"id": issue_id, "version": 1, "origin": ORIGIN,
                        "comment": f"harness bisect: {req.check.describe()}",
                        "culprit": {"code": True, "tool": False, "harness": False},
                        "misc": {"reason": culprit.verdict.reason[:1000], "runs": culprit.runs}}],
            "incidents": [{"id": f"{issue_id}:{content_key(str(result.out_dir))}", "origin": ORIGIN,
                           "issue_id": issue_id, "issue_version": 1, "build_id": build_id, "present": True,
                           "comment": culprit.verdict.reason[:1000]}]}


def _results(run: Path) -> list[Result]:
    path = rundir.RunDir(run).outcomes
    return read_results(path) if path.exists() else []


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
