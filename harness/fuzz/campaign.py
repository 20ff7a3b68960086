"""A fuzzing campaign: programs from a seed, run on one guest per job, the interesting ones kept in a corpus,
each new finding shrunk and written out.

Program k of a seed is drawn from random.Random(f"{seed}:{k}"): generated, or (half the time, once the
corpus has programs) a mutation of corpus programs. The corpus grows in program order, with every program
that showed a new behaviour: an (operation, result, invalidation events) triple no program had shown. With
--jobs N, programs run in batches of N drawn from the same corpus, merged back in order, so a seed gives the
same programs whatever N is, for as long as the runs show the same behaviours (a THP that one run got and
another did not, reclaim or KSM on their own time, and the corpora part). The corpus and the next k live in
the cache (`--resume` goes on from them).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness import atomic, paths
from harness.fuzz import oracle
from harness.fuzz.program import Generator, Program, parse, render
from harness.fuzz.runner import FuzzGuest, Run
from harness.fuzz.shrink import shrink
from harness.kernel.build import content_key


@dataclass
class Found:
    finding: oracle.Finding
    seed: str
    index: int  # the program's k
    original: Program
    minimal: Program
    minimal_outcome: oracle.Outcome
    shrink_runs: int
    seconds_to_find: float  # from the campaign's start to the program that showed it


@dataclass
class Stats:
    programs: int = 0
    ops: int = 0
    run_s: float = 0.0
    behaviours: int = 0
    corpus: int = 0
    boots: int = 0
    known: dict[str, int] = field(default_factory=dict)  # findings of configs/fuzz.yaml's `known`, by pattern


@dataclass
class Corpus:
    """A seed's corpus in the cache: one file a program, and the next program index."""
    dir: Path
    programs: list[Program] = field(default_factory=list)
    next_index: int = 0
    behaviours: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, seed: str, resume: bool) -> Corpus:
        d = paths.cache_root() / "fuzz" / f"seed-{content_key('fuzz-seed', seed)}"
        corpus = cls(d)
        state = d / "state.json"
        if resume and state.exists():
            data = json.loads(state.read_text())
            corpus.next_index = int(data["next_index"])
            corpus.behaviours = set(data["behaviours"])
            for name in data["programs"]:  # in the order they were kept: the draws depend on it
                corpus.programs.append(parse((d / name).read_text(), str(d / name)))
        return corpus

    def add(self, program: Program) -> None:
        self.programs.append(program)
        text = render(program)
        atomic.write_text(self.dir / f"{content_key('fuzz-program', text)}.prog", text)

    def save(self) -> None:
        names = [f"{content_key('fuzz-program', render(p))}.prog" for p in self.programs]
        atomic.write_text(self.dir / "state.json", json.dumps(
            {"next_index": self.next_index, "behaviours": sorted(self.behaviours), "programs": names}))


def behaviours(run: Run) -> set[str]:
    """What a run showed, as words: each operation kind with its result and the events it caused, and with
    --kcov each kernel PC its system calls ran."""
    out = {f"pc:{pc:x}" for pc in run.outcome.pcs}
    texts = [op.kind() for op in run.program]
    for line in run.outcome.ops:
        i = int(line["i"])
        kind = texts[i] if i < len(texts) else line["op"]
        events = ",".join(sorted({e for e, _, _ in run.outcome.events.get(i, [])}))
        out.add(f"{kind}|{'ok' if line['ret'] == 0 else 'err'}|{events}")
    return out


class Campaign:
    def __init__(self, guests: list[FuzzGuest], generator: Generator, corpus: Corpus, seed: str,
                 on_found: Callable[[Found], None], shrink_budget: int = 150):
        self.guests, self.generator, self.corpus, self.seed = guests, generator, corpus, seed
        self.on_found, self.shrink_budget = on_found, shrink_budget
        self.stats = Stats(corpus=len(corpus.programs), behaviours=len(corpus.behaviours))
        self.found: dict[str, Found] = {}
        self.started = time.monotonic()

    def draw(self, k: int) -> Program:
        rng = random.Random(f"{self.seed}:{k}")
        if self.corpus.programs and rng.random() < 0.5:
            return self.generator.mutate(rng, rng.choice(self.corpus.programs), rng.choice(self.corpus.programs))
        return self.generator.program(rng)

    def run(self, seconds: float, max_programs: int | None = None, stop_at_first: bool = False,
            stop_checks: frozenset[str] = frozenset()) -> Stats:
        """Fuzz until the deadline; with stop_at_first, until the first finding (of one of stop_checks, when
        given: a campaign after a planted bug goes on past a crash of something else, recorded all the same)."""
        deadline = self.started + seconds
        last_progress = 0.0
        with ThreadPoolExecutor(max_workers=len(self.guests)) as pool:
            while time.monotonic() < deadline and (max_programs is None or self.stats.programs < max_programs):
                k0 = self.corpus.next_index
                batch = [(k, self.draw(k)) for k in range(k0, k0 + len(self.guests))]
                runs = list(pool.map(lambda guest, kp: guest.run(kp[1]), self.guests, batch))
                for (k, _), run in zip(batch, runs, strict=True):
                    self._account(k, run)
                self.corpus.next_index = k0 + len(batch)
                self.corpus.save()
                if time.monotonic() - last_progress >= 10:
                    last_progress = time.monotonic()
                    print(self.progress(), file=sys.stderr, flush=True)
                if stop_at_first and any(not stop_checks or f.finding.check in stop_checks
                                         for f in self.found.values()):
                    break
        self.stats.boots = sum(g.boots for g in self.guests)
        return self.stats

    def _account(self, k: int, run: Run) -> None:
        s = self.stats
        s.programs += 1
        s.ops += len(run.program)
        s.run_s += run.seconds
        new = behaviours(run) - self.corpus.behaviours
        if new and run.outcome.finding is None:
            self.corpus.behaviours |= new
            self.corpus.add(run.program)
        s.behaviours, s.corpus = len(self.corpus.behaviours), len(self.corpus.programs)
        f = run.outcome.finding
        if f is None or f.signature in self.found:
            return
        if known := self.generator.config.known_as(f.signature):
            if known not in s.known:
                print(f"fuzz: program {k}: a known finding ({known}, configs/fuzz.yaml): {f.describe()}",
                      file=sys.stderr, flush=True)
            s.known[known] = s.known.get(known, 0) + 1
            return
        print(f"fuzz: program {k} found {f.describe()}; shrinking ...", file=sys.stderr, flush=True)
        found_at = time.monotonic() - self.started
        guest = self.guests[0]
        last: dict[str, oracle.Outcome] = {}

        def fails(candidate: Program) -> bool:
            outcome = guest.run(candidate).outcome
            same = outcome.finding is not None and outcome.finding.signature == f.signature
            if same:
                last["outcome"] = outcome
            return same

        shrunk = shrink(run.program, fails, self.shrink_budget)
        found = Found(f, self.seed, k, run.program, shrunk.program, last.get("outcome", run.outcome), shrunk.runs,
                      found_at)
        self.found[f.signature] = found
        print(f"fuzz: shrunk to {len(shrunk.program)} operation(s) in {shrunk.runs} run(s)"
              f"{'' if shrunk.complete else ' (budget spent)'}", file=sys.stderr, flush=True)
        self.on_found(found)

    def progress(self) -> str:
        s, elapsed = self.stats, max(time.monotonic() - self.started, 1e-9)
        return (f"fuzz: {elapsed:.0f} s: {s.programs} programs ({s.programs / elapsed:.2f}/s), "
                f"{s.ops / elapsed:.0f} ops/s, {s.behaviours} behaviours, corpus {s.corpus}, "
                f"findings {len(self.found)}" + (f" (and {sum(s.known.values())} known)" if s.known else ""))
