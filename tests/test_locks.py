"""Locks as small as what they guard, and never silent, with real processes: a wait of more than a second names
the holder (pid, command, what, since, its log's last line) on stderr, then its progress; two configs of one tree
build at once; one config is built once; a ready kernel never waits.

No verdict here rests on how fast the host is (make test runs these beside kernel builds and guests): a holder
holds until the test lets it go, a process is waited for by what it wrote, and "at once" is proved by what is
still running, not by a stopwatch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from harness import locks, paths

# A holder in its own process: takes the lock (the harness's way, or a bare flock as an older harness
# did), says so on stdout, holds it until its stdin closes (release()).
HOLDER = textwrap.dedent("""
    import fcntl, sys
    from pathlib import Path
    from harness import locks
    lock, how = Path(sys.argv[1]), sys.argv[2]
    if how == "bare":
        f = open(lock, "a"); fcntl.flock(f, fcntl.LOCK_EX)
        print("held", flush=True); sys.stdin.read()
    else:
        with locks.locked(lock, "building kernel 6.12.117 (notifier off)", log=lock.with_suffix(".log"),
                           shared=how == "shared"):
            print("held", flush=True); sys.stdin.read()
""")


def hold(lock: Path, how: str = "exclusive") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), how], cwd=paths.REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline() == "held\n"
    return proc


def release(holder: subprocess.Popen[str], after: float = 0.0) -> threading.Timer:
    """Let the holder go, now or after `after` seconds (from a timer thread)."""
    assert holder.stdin
    timer = threading.Timer(after, holder.stdin.close)
    timer.start()
    return timer


def test_a_wait_names_the_holder_then_its_progress(tmp_path: Path, capsys):
    lock = tmp_path / "build-x.lock"
    lock.with_suffix(".log").write_text("make bzImage\n  CC      mm/rmap.o\n")
    holder = hold(lock)
    release(holder, after=2.5)  # at least 2.5 s from here: past NOTICE_AFTER_S and three progress lines' worth
    started = time.monotonic()
    with locks.locked(lock, "the same build", progress_every=0.7):
        waited = time.monotonic() - started
    holder.wait()
    err = capsys.readouterr().err
    assert waited > 1.5, waited  # a lower bound only: a loaded host makes a wait longer, never shorter
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
    holder = hold(lock)
    release(holder)
    with locks.locked(lock, notice_after=60):  # however loaded the host, the holder's exit takes less
        pass
    holder.wait()
    assert capsys.readouterr().err == ""


def test_a_holder_without_a_record_is_still_named(tmp_path: Path, capsys):
    lock = tmp_path / "old.lock"
    holder = hold(lock, how="bare")  # a harness from before holder records
    release(holder, after=2.0)  # past NOTICE_AFTER_S
    with locks.locked(lock):
        pass
    holder.wait()
    err = capsys.readouterr().err
    assert f"held by pid {holder.pid} ({sys.executable} -c" in err
    assert "which left no holder record (an older harness?)" in err


def test_readers_share_and_a_writer_waits_for_them(tmp_path: Path, capsys):
    lock = tmp_path / "tree.lock"
    readers = [hold(lock, how="shared"), hold(lock, how="shared")]  # the second did not wait for the first
    read = threading.Event()

    def third_reader() -> None:  # nor does a third
        with locks.locked(lock, shared=True):
            read.set()
    threading.Thread(target=third_reader).start()
    assert read.wait(60), "a third reader waited for two readers (who hold until released)"
    written = threading.Event()

    def writer() -> None:
        with locks.locked(lock, "unpacking"):
            written.set()
    w = threading.Thread(target=writer)
    w.start()
    assert not written.wait(2), "a writer got the lock while two readers held it"
    for r in readers:
        release(r)
        r.wait()
    assert written.wait(60), "the writer never got the lock once the readers let it go"
    w.join(60)
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


def _makes(cache: Path) -> dict[str, tuple[int, float, float]]:
    """Each fake make's key: (pid, start, end), from makes.log (tests/lock_worker.py)."""
    rows = [line.split() for line in (cache / "makes.log").read_text().splitlines()]
    return {key: (int(pid), float(start), float(end)) for key, pid, start, end in rows}


def _building(cache: Path, key: str, proc: subprocess.Popen[str]) -> None:
    """Until the worker's fake make has started (it holds the build lock then): what it wrote, not a stopwatch."""
    log = cache / "src" / "linux" / f"harness-build-{key}" / "build.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and f"({key})" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the worker never started its make"
        time.sleep(0.05)


def test_two_configs_of_one_tree_build_at_once(tmp_path: Path):
    a, b = _prepare(tmp_path, "on", 8), _prepare(tmp_path, "off", 8)
    (_, ea), (_, eb) = _finish(a), _finish(b)
    makes = _makes(tmp_path)
    (_, on_start, on_end), (_, off_start, off_end) = makes["on"], makes["off"]
    assert on_start < off_end and off_start < on_end, makes  # the two makes ran at the same time
    assert "waiting for" not in ea + eb


def test_one_config_asked_twice_is_built_once_and_the_second_says_why_it_waits(tmp_path: Path):
    first = _prepare(tmp_path, "on", 3)
    _building(tmp_path, "on", first)  # the first holds the build lock now
    second = _prepare(tmp_path, "on", 3)
    (r1, _), (r2, e2) = _finish(first), _finish(second)
    assert list(_makes(tmp_path)) == ["on"] and _makes(tmp_path)["on"][0] == r1["pid"]  # one make, the first's
    assert r2["build"] == r1["build"]
    assert "harness: waiting for build-6.12.117-on.lock (building kernel 6.12.117 " in e2
    assert f"held by pid {r1['pid']} (" in e2 and "(last: CC      mm/rmap.o (on))" in e2


def test_a_ready_kernel_does_not_wait_for_another_configs_build(tmp_path: Path):
    _finish(_prepare(tmp_path, "on", 0))  # "on" is built and ready
    other = _prepare(tmp_path, "off", 300)
    try:
        _building(tmp_path, "off", other)  # "off" is building, holding its build lock and the tree's shared lock
        _, err = _finish(_prepare(tmp_path, "on", 0))
        assert other.poll() is None, "the other build ended first: nothing was shown"
        assert "waiting" not in err  # the ready one came back while the other still builds, and never waited
    finally:
        other.kill()
        other.wait()
