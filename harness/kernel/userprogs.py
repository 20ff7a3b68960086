"""User-space programs built against the kernel under test: its selftests and guest/kprograms/.

A driver's own test program speaks the driver's ABI as *this* tree defines it (lib/test_hmm_uapi.h,
include/uapi/drm/...), which the host's /usr/include may not have or may have older. So these are
compiled statically against the build's `make headers` output (<build>/usr/include, what the
selftests' KHDR_INCLUDES point at) plus the tree itself for private uapi headers (`-I <tree>`, as
tools/testing/selftests/mm/Makefile does). Everything is written under the build directory, keyed by
the sources: the source tree is shared and never written to. Tests copy the binaries into the guest.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from harness import atomic, paths
from harness.kernel.build import BuildError, KernelBuild, content_key, make_cmd, run_logged

KPROGRAMS = paths.GUEST / "kprograms"
# selftests/vm/ became selftests/mm/ in Linux 6.3
HMM_TESTS = ("tools/testing/selftests/mm/hmm-tests.c", "tools/testing/selftests/vm/hmm-tests.c")
_SELFTEST_HEADERS = ("tools/testing/selftests/kselftest_harness.h", "tools/testing/selftests/kselftest.h")


def uapi_headers(build: KernelBuild) -> Path:
    """<build>/usr/include from `make headers`, made once per build of an immutable tree."""
    include = build.dir / "usr/include"
    stamp = build.dir / ".harness-headers.json"
    if build.tree.immutable and stamp.exists():
        return include
    with atomic.locked(build.dir / ".harness-headers.lock"):
        if not (build.tree.immutable and stamp.exists()):
            started = time.monotonic()
            run_logged(make_cmd(build.tree, build.dir, "headers"), build.dir / "harness-userprogs.log",
                       "make headers")
            atomic.write_text(stamp, json.dumps({"s": round(time.monotonic() - started, 1)}))
    return include


def compile_static(build: KernelBuild, name: str, source: Path, inputs: Sequence[Path], cflags: Sequence[str],
                   libs: Sequence[str] = ()) -> Path:
    """`gcc -static` of one C file against this build's headers; cached by the file, its inputs and flags."""
    include = uapi_headers(build)
    key = content_key(name, source.read_bytes(), *(p.read_bytes() for p in inputs), *cflags, *libs)
    out = build.dir / "harness-userprogs" / f"{name}-{key}"
    if not (out / name).exists():
        cmd = ["gcc", *cflags, "-static", "-isystem", str(include), "-I", str(build.tree.path),
               "-o", "OUT", str(source), *libs]
        with atomic.staged_dir(out) as tmp:
            cmd[cmd.index("OUT")] = str(tmp / name)
            log = build.dir / "harness-userprogs.log"
            proc = subprocess.run(cmd, capture_output=True, text=True)
            with open(log, "a") as f:
                f.write(f"\n$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
            if proc.returncode != 0:
                raise BuildError(f"building {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
                                 f"\n  log: {log}")
    return out / name


def hmm_tests_source(tree: Path) -> Path | None:
    return next((tree / p for p in HMM_TESTS if (tree / p).exists()), None)


def hmm_tests(build: KernelBuild) -> Path:
    """The tree's own selftests/mm/hmm-tests, as its Makefile would build it, but static."""
    tree = build.tree.path
    source = hmm_tests_source(tree)
    if source is None:
        raise BuildError(f"{tree} has none of {', '.join(HMM_TESTS)}")
    inputs = [tree / h for h in (*_SELFTEST_HEADERS, "lib/test_hmm_uapi.h", "mm/gup_test.h") if (tree / h).exists()]
    return compile_static(build, "hmm-tests", source, inputs, ["-O2", "-Wall", f"-I{tree}/tools/testing/selftests"],
                          ["-lpthread"])


def kprogram(build: KernelBuild, name: str) -> Path:
    """guest/kprograms/NAME.c, which includes guest/programs/*.h (probe.h, ev_cases.h) and this tree's uapi
    headers; all of them are inputs of its cache key."""
    source = KPROGRAMS / f"{name}.c"
    inputs = sorted((paths.GUEST / "programs").glob("*.h"))
    if (build.tree.path / "lib/test_hmm_uapi.h").exists():
        inputs.append(build.tree.path / "lib/test_hmm_uapi.h")
    return compile_static(build, name, source, inputs, ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"])
