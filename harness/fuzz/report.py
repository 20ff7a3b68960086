"""What a finding leaves in the run directory, `findings/N-SLUG/`:

    finding.json        the check, the operation, the detail, the seed and program index, time to find,
                        the kernel, and the minimal program's run (its operations' lines and events)
    program.prog        the minimal program (`harness fuzz --replay program.prog` runs it again)
    original.prog       the program as first drawn
    reproducer.c        stand-alone: fuzz_exec.c and probe.h with the program built in (build line inside)
    test_fuzz_SLUG.py   a pytest case for suites/: the program must run clean; `harness run` runs it
and for the run, fuzz.json (the campaign's figures and every finding) and kcidb.json (KCIDB v5 issues
and incidents, one issue per finding signature, for the nightly).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from harness import paths
from harness.atomic import write_text
from harness.fuzz.campaign import Found
from harness.fuzz.program import render
from harness.kernel.build import content_key
from harness.kernel.prepare import Prepared
from harness.results.kcidb import ORIGIN

EXECUTOR = paths.GUEST / "kprograms" / "fuzz_exec.c"
PROBE_H = paths.GUEST / "programs" / "probe.h"
KCIDB_VERSION = {"major": 5, "minor": 3}


def slug(found: Found) -> str:
    return re.sub(r"[^a-z0-9]+", "_", found.finding.signature.lower()).strip("_")[:48] or "finding"


def write_finding(out_dir: Path, n: int, found: Found, prepared: Prepared) -> Path:
    d = out_dir / "findings" / f"{n}-{slug(found)}"
    d.mkdir(parents=True, exist_ok=True)
    f = found.finding
    write_text(d / "program.prog", render(found.minimal))
    write_text(d / "original.prog", render(found.original))
    write_text(d / "finding.json", json.dumps({
        **f.to_json(), "seed": found.seed, "program_index": found.index,
        "seconds_to_find": round(found.seconds_to_find, 1), "shrink_runs": found.shrink_runs,
        "ops_before_shrinking": len(found.original), "ops_after": len(found.minimal),
        "kernel": {"release": prepared.build.release, "identity": prepared.tree.identity,
                   "build_dir": str(prepared.build.dir)},
        "minimal_run": {"ops": found.minimal_outcome.ops, "notes": found.minimal_outcome.notes,
                        "events": found.minimal_outcome.to_json()["events"]},
    }, indent=1))
    write_text(d / "reproducer.c", reproducer(found, prepared))
    write_text(d / f"test_fuzz_{slug(found)}.py", regression_test(found, prepared))
    return d


def reproducer(found: Found, prepared: Prepared) -> str:
    """fuzz_exec.c with probe.h inlined and the program built in: one file to mail to a list."""
    program = render(found.minimal)
    literal = " \\\n".join(f'\t"{line}\\n"' for line in program.splitlines())
    source = EXECUTOR.read_text().replace('#include "../programs/probe.h"\n', PROBE_H.read_text())
    return (f"/*\n * Reproducer from `harness fuzz` (seed {found.seed}, program {found.index}) on "
            f"{prepared.build.release}:\n *   {found.finding.describe()[:600]}\n *\n"
            " * Build against the kernel's headers (lib/test_hmm_uapi.h and its uapi):\n"
            f" *   {prepared.build.arch.gcc} -O2 -static -I LINUX_TREE -isystem BUILD/usr/include reproducer.c -o "
            "reproducer\n"
            " * Run as root in the guest, with the harness's mmu_probe module and test_hmm loaded:\n"
            " *   ./reproducer    (exit 3 and a {\"finding\": ...} line: the bug; 0: clean)\n */\n"
            f"#define FUZZ_EMBEDDED_PROGRAM \\\n{literal}\n\n" + source)


def regression_test(found: Found, prepared: Prepared) -> str:
    name = slug(found)
    program = render(found.minimal)
    arch = f" --arch {prepared.build.arch.name}" if prepared.build.arch.foreign else ""
    return f'''"""Regression test from `harness fuzz` (seed {found.seed}, program {found.index}), first seen on
{prepared.build.release} ({prepared.build.arch.name}):

    {found.finding.describe()[:400]}

The program must now run clean under the fuzzer's oracle. Copy this file into suites/, then:
    harness run suites/test_fuzz_{name}.py --kernel-src KSRC{arch}
"""

import pytest

from harness.fuzz.suite import assert_runs_clean

pytestmark = [pytest.mark.e2e, pytest.mark.needs_notifier]

PROGRAM = """\\
{program}"""


def test_fuzz_{name}(guest, kernel) -> None:
    assert_runs_clean(guest, kernel, PROGRAM)
'''


def kcidb(found: list[Found], prepared: Prepared, run_dir: Path) -> dict[str, Any]:
    """KCIDB issues (one per signature) and incidents (this run's occurrence on this build)."""
    build_id = f"{ORIGIN}:{content_key(prepared.tree.identity)}:{prepared.build.dir.name.rsplit('-', 1)[-1]}"
    issues, incidents = [], []
    for n, x in enumerate(found, 1):
        issue_id = f"{ORIGIN}:fuzz:{content_key(x.finding.signature)}"
        issues.append({"id": issue_id, "version": 1, "origin": ORIGIN,
                       "comment": f"harness fuzz: {x.finding.signature}",
                       "culprit": {"code": True, "tool": False, "harness": False},
                       "misc": {"detail": x.finding.detail[:1000], "program": render(x.minimal),
                                "finding_dir": str(run_dir / "findings" / f"{n}-{slug(x)}")}})
        incidents.append({"id": f"{issue_id}:{content_key(str(run_dir), str(n))}", "origin": ORIGIN,
                          "issue_id": issue_id, "issue_version": 1, "build_id": build_id, "present": True,
                          "comment": x.finding.describe()[:1000]})
    return {"version": KCIDB_VERSION, "issues": issues, "incidents": incidents}
