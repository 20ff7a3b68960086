"""Locks as small as what they guard, and never silent (issue 18), with real processes: a wait of more
than a second names the holder (pid, command, what, since, its log's last line) on stderr, then its
progress; two configs of one tree build at once; one config is built once; a ready kernel never waits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from harness import locks, paths

# A holder in its own process: takes the lock (the harness's way, or a bare flock as an older harness
# did), says so on stdout, holds it for the given seconds.
HOLDER = textwrap.dedent("""
    import fcntl, sys, time
    from pathlib import Path
    from harness import locks
    lock, seconds, how = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    if how == "bare":
        f = open(lock, "a"); fcntl.flock(f, fcntl.LOCK_EX)
        print("held", flush=True); time.sleep(seconds)
    else:
        with locks.locked(lock, "building kernel 6.12.117 (notifier off)", log=lock.with_suffix(".log"),
                           shared=how == "shared"):
            print("held", flush=True); time.sleep(seconds)
""")


def hold(lock: Path, seconds: float, how: str = "exclusive") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(seconds), how], cwd=paths.REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline() == "held\n"
    return proc


def test_a_wait_names_the_holder_then_its_progress(tmp_path: Path, capsys):
    lock = tmp_path / "build-x.lock"
    lock.with_suffix(".log").write_text("make bzImage\n  CC      mm/rmap.o\n")
    holder = hold(lock, 2.5)
    started = time.monotonic()
    with locks.locked(lock, "the same build", progress_every=0.7):
        waited = time.monotonic() - started
    holder.wait()
    err = capsys.readouterr().err
    assert 1.5 < waited < 5, waited
    first = err.splitlines()[0]
    assert first.startswith(f"harness: waiting for build-x.lock (the same build), held by pid {holder.pid} ("), err
    assert f"{sys.executable} -c" in first  # the holder's command line
    assert ", building kernel 6.12.117 (notifier off), since " in first and " s ago)" in first
    assert f"log: {lock.with_suffix('.log')} (last: CC      mm/rmap.o)" in first
    assert "harness: still waiting for build-x.lock after " in err  # progress while waiting
    assert err.splitlines()[-1].startswith("harness: got build-x.lock after ")
    assert not list(tmp_path.glob("*.holder-*")), "a holder record outlived its holding"


def test_a_short_wait_is_silent(tmp_path: Path, capsys):
    lock = tmp_path / "l.lock"
    holder = hold(lock, 0.3)
    with locks.locked(lock):
        pass
    holder.wait()
    assert capsys.readouterr().err == ""


def test_a_holder_without_a_record_is_still_named(tmp_path: Path, capsys):
    lock = tmp_path / "old.lock"
    holder = hold(lock, 1.6, how="bare")  # a harness from before holder records
    with locks.locked(lock):
        pass
    holder.wait()
    err = capsys.readouterr().err
    assert f"held by pid {holder.pid} ({sys.executable} -c" in err
    assert "which left no holder record (an older harness?)" in err


def test_readers_share_and_a_writer_waits_for_them(tmp_path: Path, capsys):
    lock = tmp_path / "tree.lock"
    readers = [hold(lock, 2, how="shared"), hold(lock, 2, how="shared")]  # the second did not wait for the first
    started = time.monotonic()
    with locks.locked(lock, shared=True):
        assert time.monotonic() - started < 0.5  # a third reader neither
    with locks.locked(lock, "unpacking"):
        assert time.monotonic() - started > 1
    for r in readers:
        r.wait()
    err = capsys.readouterr().err
    assert all(f"pid {r.pid} (" in err for r in readers), err  # both holders named


def _prepare(cache: Path, key: str, make_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.lock_worker", str(cache), key, str(make_s)],
                            cwd=paths.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HARNESS_CACHE": str(cache)})


def _finish(proc: subprocess.Popen[str]) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1]), err


def test_two_configs_of_one_tree_build_at_once(tmp_path: Path):
    a, b = _prepare(tmp_path, "on", 3), _prepare(tmp_path, "off", 3)
    (ra, ea), (rb, eb) = _finish(a), _finish(b)
    assert max(ra["ended"], rb["ended"]) - min(ra["started"], rb["started"]) < 5.5  # not 3 + 3 in a row
    assert "waiting for" not in ea + eb
    assert sorted(line.split()[0] for line in (tmp_path / "makes.log").read_text().splitlines()) == ["off", "on"]


def test_one_config_asked_twice_is_built_once_and_the_second_says_why_it_waits(tmp_path: Path):
    first = _prepare(tmp_path, "on", 3)
    time.sleep(1)  # the first holds the build lock by now
    second = _prepare(tmp_path, "on", 3)
    (r1, _), (r2, e2) = _finish(first), _finish(second)
    assert (tmp_path / "makes.log").read_text().splitlines() == [f"on {r1['pid']}"]  # one make
    assert r2["build"] == r1["build"]
    assert "harness: waiting for build-6.12.117-on.lock (building kernel 6.12.117 " in e2
    assert f"held by pid {r1['pid']} (" in e2 and "(last: CC      mm/rmap.o (on))" in e2


def test_a_ready_kernel_does_not_wait_for_another_configs_build(tmp_path: Path):
    _finish(_prepare(tmp_path, "on", 0))  # "on" is built and ready
    other = _prepare(tmp_path, "off", 6)
    time.sleep(1.5)  # "off" is building, holding its build lock and the tree's shared lock
    started = time.monotonic()
    _, err = _finish(_prepare(tmp_path, "on", 0))
    assert time.monotonic() - started < 3, err  # the interpreter's start-up, no wait
    assert "waiting" not in err
    _finish(other)
