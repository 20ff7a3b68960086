"""A stand-in for `python -m harness.cli` in tests of the matrix runner: no kernel, no QEMU.

`kernel`: succeeds, except for --kernel-src debian:9.9, which fails the way a kernel build does.
`run`: behaves as the suite's file name says (test_pass, test_fail, test_flaky_infra, test_hang,
test_silent, test_infra_error, test_user_error), writing what `harness run` writes and its --record, and logs
its start and end for the concurrency check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harness.results.model import ExitRecord


def write_results(out: Path, suite: str, outcomes: list[tuple[str, str]]) -> None:
    results = [{"test": f"{suite}::{name}", "outcome": outcome, "reason": "" if outcome == "PASS" else
                f"{name} went {outcome}", "duration_s": 0.5, "console_log": str(out / "vm-1" / "console.log"),
                "dmesg": None, "extra": {}} for name, outcome in outcomes]
    (out / "vm-1").mkdir(parents=True, exist_ok=True)
    (out / "vm-1" / "console.log").write_text("[    0.000000] Linux version 6.12.117\n")
    (out / "outcomes.json").write_text(json.dumps(results))
    cases = "".join(f'<testcase classname="{Path(suite).stem}" name="{n}" time="0.5">'
                    + ("" if o == "PASS" else f'<failure message="{n} went {o}"/>') + "</testcase>"
                    for n, o in outcomes)
    (out / "junit.xml").write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    (out / "timings.json").write_text(json.dumps({"boots": [{"vm": 1, "boot_to_ssh_s": 2.5, "accel": "tcg"}]}))


FAILURES = {"test_infra_error": ("infra", 75, "apt-get update of bookworm-backports failed (exit 100): network"),
            "test_user_error": ("user", 2, "machine profile 'nope': no such profile")}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--record", type=Path)
    p.add_argument("command")
    p.add_argument("--kernel-src")
    p.add_argument("--notifier")
    p.add_argument("--fragment")
    p.add_argument("--machine")
    p.add_argument("--results-dir", type=Path)
    p.add_argument("suite", nargs="?")
    args = p.parse_intermixed_args()
    if args.command == "kernel":
        print(f"building kernel {args.kernel_src}", flush=True)
        if args.kernel_src == "debian:9.9":
            message = "kernel build failed (exit 2); last lines of build.log:\nmm/oops.c:1: error: boom"
            print(f"harness: {message}")
            ExitRecord("kernel", 2, "user", message).write(args.record)
            return 2
        print(json.dumps({"bzImage": "/nowhere"}, indent=2))
        ExitRecord("kernel", 0).write(args.record)
        return 0
    out: Path = args.results_dir
    log = out.parent / "concurrency.log"
    with open(log, "a") as f:
        f.write(f"start {time.monotonic()} {out.name}\n")
    behaviour = Path(args.suite).stem
    rc = 0
    if behaviour == "test_pass":
        write_results(out, args.suite, [("test_a", "PASS"), ("test_b", "PASS")])
    elif behaviour == "test_fail":
        write_results(out, args.suite, [("test_a", "PASS"), ("test_b", "FAIL")])
        rc = 1
    elif behaviour == "test_flaky_infra":
        marker = out.parent / f".{out.name}.tried"
        if marker.exists():
            write_results(out, args.suite, [("test_a", "PASS")])
        else:
            marker.touch()
            write_results(out, args.suite, [("test_a", "INFRA")])
            rc = 1
    elif behaviour in FAILURES:  # a command that failed before its verdict: its record says how, not its output
        kind, rc, message = FAILURES[behaviour]
        print("harness: what the log says is not what the runner reads")
        ExitRecord("run", rc, kind, message).write(args.record)
        return rc
    elif behaviour == "test_hang":
        time.sleep(600)
    elif behaviour == "test_silent":
        print("Traceback (most recent call last): the harness fell over", file=sys.stderr)
        rc = 1
    time.sleep(0.5)  # long enough for cells to overlap
    with open(log, "a") as f:
        f.write(f"end {time.monotonic()} {out.name}\n")
    if behaviour != "test_silent":  # a process that crashed leaves no record
        ExitRecord("run", rc).write(args.record)
    return rc


if __name__ == "__main__":
    sys.exit(main())
