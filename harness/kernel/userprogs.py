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
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, locks, paths
from harness.kernel import debian, sandbox
from harness.kernel.build import BuildError, KernelBuild, content_key, make_cmd, run_logged

KPROGRAMS = paths.GUEST / "kprograms"
# selftests/vm/ became selftests/mm/ in Linux 6.3
HMM_TESTS = ("tools/testing/selftests/mm/hmm-tests.c", "tools/testing/selftests/vm/hmm-tests.c")
_SELFTEST_HEADERS = ("tools/testing/selftests/kselftest_harness.h", "tools/testing/selftests/kselftest.h")


class CompileError(BuildError):
    """gcc failed; `first_error` is the line of its output that says what went wrong first."""

    def __init__(self, message: str, first_error: str):
        super().__init__(message)
        self.first_error = first_error


def uapi_headers(build: KernelBuild) -> Path:
    """<build>/usr/include from `make headers`, made once per build of an immutable tree."""
    include = build.dir / "usr/include"
    stamp = build.dir / ".harness-headers.json"
    if build.tree.immutable and stamp.exists():
        return include
    with locks.locked(build.dir / ".harness-headers.lock"):
        if not (build.tree.immutable and stamp.exists()):
            started = time.monotonic()
            run_logged(make_cmd(build.tree, build.dir, "headers", arch=build.arch), build.dir / "harness-userprogs.log",
                       "make headers", jail=sandbox.for_tree(build.tree, writable=(build.dir,)))
            atomic.write_text(stamp, json.dumps({"s": round(time.monotonic() - started, 1)}))
    return include


def compile_static(build: KernelBuild, name: str, source: Path, inputs: Sequence[Path], cflags: Sequence[str],
                   libs: Sequence[str] = (), more_sources: Sequence[Path] = ()) -> Path:
    """`gcc -static` of one C file (and `more_sources` linked with it) against this build's headers; cached by
    the files, their inputs and flags."""
    include = uapi_headers(build)
    sysroot = debian.cross_libraries(build.arch)
    key = content_key(name, source.read_bytes(), *(p.read_bytes() for p in (*more_sources, *inputs)),
                      *cflags, *libs, *([build.arch.gcc, str(sysroot)] if build.arch.foreign else []))
    out = build.dir / "harness-userprogs" / f"{name}-{key}"
    if not (out / name).exists():
        cross = ["-isystem", f"{sysroot}/usr/include", "-L", f"{sysroot}/usr/lib/{build.arch.triplet}"] \
            if sysroot else []
        cmd = [build.arch.gcc, *cflags, "-static", "-isystem", str(include), "-I", str(build.tree.path), *cross,
               "-o", "OUT", str(source), *map(str, more_sources), *libs]
        with atomic.staged_dir(out) as tmp:
            cmd[cmd.index("OUT")] = str(tmp / name)
            log = build.dir / "harness-userprogs.log"
            # gcc reads an untrusted tree's headers in its jail (its #include could name any file)
            readable = (build.dir, paths.GUEST, source.parent, *([sysroot] if sysroot else []))
            jail = sandbox.for_tree(build.tree, readable=readable, writable=(tmp,))
            proc = sandbox.run(jail, cmd)
            with open(log, "a") as f:
                f.write(f"\n$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
            if proc.returncode != 0:
                raise CompileError(f"building {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
                                   f"\n  log: {log}", first_compiler_error(proc.stderr))
    return out / name


def hmm_tests_source(tree: Path) -> Path | None:
    return next((tree / p for p in HMM_TESTS if (tree / p).exists()), None)


def hmm_tests(build: KernelBuild) -> Path:
    """The tree's own selftests/mm/hmm-tests, as its Makefile builds it (7.x links vm_util.c), but static."""
    tree = build.tree.path
    if hmm_tests_source(tree) is None:
        raise BuildError(f"{tree} has none of {', '.join(HMM_TESTS)}")
    return mm_selftest(build, "hmm-tests")


def kprogram(build: KernelBuild, name: str) -> Path:
    """guest/kprograms/NAME.c, which includes guest/programs/*.h (probe.h, ev_cases.h), guest/gpusvm's interface
    and this tree's uapi headers; all of them are inputs of its cache key."""
    source = KPROGRAMS / f"{name}.c"
    inputs = [*sorted((paths.GUEST / "programs").glob("*.h")), paths.GUEST / "gpusvm" / "gpusvm_mirror.h"]
    if (build.tree.path / "lib/test_hmm_uapi.h").exists():
        inputs.append(build.tree.path / "lib/test_hmm_uapi.h")
    return compile_static(build, name, source, inputs, ["-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11"])


# --- the tree's mm selftests (tools/testing/selftests/mm/, vm/ before 6.3) -----------------------------

MM_SELFTEST_DIRS = ("tools/testing/selftests/mm", "tools/testing/selftests/vm")
# What the Makefile's check_config.sh would write when it finds no liburing: we link none (and our kernels
# have no IO_URING), so cow and gup_longterm leave out their io_uring cases. 6.12 names it local_config.h,
# 7.x local_config.h_gen.
_LOCAL_CONFIG = "// No liburing support found\n"
_LOCAL_CONFIG_NAMES = ("local_config.h", "local_config.h_gen")


class SelftestMissing(BuildError):
    """The tree has no such selftest (it came later, or went)."""


@dataclass(frozen=True)
class SelftestRecipe:
    """How the tree's selftests Makefile builds one program: its C files (its own first) and libraries."""
    name: str
    sources: tuple[str, ...]  # relative to the selftest directory
    libs: tuple[str, ...]


def _makefile_lines(text: str) -> list[str]:
    """The Makefile's logical lines (backslash continuations joined), comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.split("#", 1)[0].rstrip() for line in joined.splitlines()]


_ASSIGN_LIBS = re.compile(r"^LDLIBS\s*:?=\s*(.*)$")
# `$(TEST_GEN_FILES): vm_util.c thp_settings.c`: sources every program of the directory links
_ALL_TARGETS = re.compile(r"^\$\((?:TEST_GEN_FILES|TEST_GEN_PROGS)\)\s*:\s*(.*)$")
# `$(OUTPUT)/ksm_tests: LDLIBS += -lnuma` or `$(OUTPUT)/khugepaged: vm_util.c`
_OUTPUT_TARGETS = re.compile(r"^((?:\$\(OUTPUT\)/\S+\s*)+):\s*(.*)$")


def selftest_recipe(makefile: str, name: str) -> SelftestRecipe:
    """NAME's sources and libraries as the selftests Makefile `makefile` (its text) builds it.

    Libraries given by variables (`$(IOURING_EXTRA_LIBS)`, from check_config.sh) are left out: we build
    without liburing. Rules the Makefile writes with other variables (the pkey _32/_64 binaries) are not
    followed.
    """
    sources = [f"{name}.c"]
    libs: list[str] = []
    for line in _makefile_lines(makefile):
        if m := _ASSIGN_LIBS.match(line):
            libs = m[1].split()
        elif m := _ALL_TARGETS.match(line):
            sources += [w for w in m[1].split() if w.endswith(".c")]
        elif (m := _OUTPUT_TARGETS.match(line)) and name in [t.removeprefix("$(OUTPUT)/") for t in m[1].split()]:
            rule = m[2].strip()
            if rule.startswith("LDLIBS"):
                libs += [w for w in rule.partition("+=")[2].split() if w.startswith("-l")]
            elif "=" not in rule:
                sources += [w for w in rule.split() if w.endswith(".c")]
    return SelftestRecipe(name, tuple(dict.fromkeys(sources)), tuple(dict.fromkeys(libs)))


_ERROR_LINE = re.compile(r"error:|undefined reference|cannot find -l")


def first_compiler_error(stderr: str) -> str:
    """The first line of gcc's or ld's output that says what went wrong (not collect2's "ld returned 1")."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    first = next((line for line in errors if not line.startswith("collect2:")), None)
    return first or (errors or lines or ["(no output)"])[0]


def mm_selftest_dir(tree: Path) -> Path | None:
    return next((tree / d for d in MM_SELFTEST_DIRS if (tree / d / "Makefile").exists()), None)


def mm_selftest(build: KernelBuild, name: str) -> Path:
    """The tree's own selftests/mm/NAME, as its Makefile builds it (sources and -l libraries from there), but
    static. SelftestMissing if the tree has no NAME.c; BuildError with the compiler's first error if it does not
    build here."""
    tree = build.tree.path
    mmdir = mm_selftest_dir(tree)
    if mmdir is None or not (mmdir / f"{name}.c").exists():
        raise SelftestMissing(f"{name}: not in this tree (no {name}.c in "
                              f"{' or '.join(MM_SELFTEST_DIRS)})")
    recipe = selftest_recipe((mmdir / "Makefile").read_text(), name)
    selftests = tree / "tools/testing/selftests"
    generated = build.dir / "harness-userprogs" / "mm-selftests-include"
    for header in _LOCAL_CONFIG_NAMES:
        if not (generated / header).exists():
            generated.mkdir(parents=True, exist_ok=True)
            atomic.write_text(generated / header, _LOCAL_CONFIG)
    cflags = ["-O2", "-Wall", "-U_FORTIFY_SOURCE", f"-I{generated}", f"-I{selftests}"]
    lib_mk = (selftests / "lib.mk").read_text()
    if "-D_GNU_SOURCE=" in lib_mk:  # lib.mk defines it for every selftest since 6.12; some rely on it
        cflags.append("-D_GNU_SOURCE=")
    if "TOOLS_INCLUDES :=" in lib_mk:  # <linux/...> headers of tools/include/uapi, after the build's own
        cflags += ["-isystem", str(uapi_headers(build)), "-isystem", str(tree / "tools/include/uapi")]
    inputs = [*sorted(mmdir.glob("*.h")), generated / _LOCAL_CONFIG_NAMES[0],
              *(tree / h for h in (*_SELFTEST_HEADERS, "mm/gup_test.h", "lib/test_hmm_uapi.h") if (tree / h).exists())]
    try:
        return compile_static(build, name, mmdir / recipe.sources[0], inputs, cflags, recipe.libs,
                              [mmdir / s for s in recipe.sources[1:]])
    except CompileError as e:
        raise CompileError(f"{name} does not build statically here: {e.first_error}", e.first_error) from e


# --- the tree's KVM selftests (tools/testing/selftests/kvm/) ---------------------------------------------

KVM_SELFTEST_DIR = "tools/testing/selftests/kvm"


def kvm_selftest(build: KernelBuild, name: str) -> Path:
    """The tree's own selftests/kvm/NAME, built by that directory's Makefile, static: its lib/ and per-arch
    libraries are many files (7.3 links libvfio too) whose dependencies make tracks, so make builds them, into
    one output directory per kernel build (OUTPUT=; the tree is never written). SelftestMissing if the tree has
    no NAME.c there; CompileError with the compiler's first error if it does not build."""
    kvmdir = build.tree.path / KVM_SELFTEST_DIR
    if not (kvmdir / f"{name}.c").exists():
        raise SelftestMissing(f"{name}: not in this tree (no {KVM_SELFTEST_DIR}/{name}.c)")
    include = uapi_headers(build)
    out = build.dir / "harness-userprogs" / "kvm-selftests"
    out.mkdir(parents=True, exist_ok=True)
    # the tree's x86 Makefile names x86_64 (6.12) or maps it to x86 (7.x); uuid for 7.x's libvfio
    cmd = ["make", "-C", str(kvmdir), "ARCH=x86_64", f"OUTPUT={out}", f"KHDR_INCLUDES=-isystem {include}",
           "USERLDFLAGS=-static", "CC=ccache gcc", f"-j{os.cpu_count() or 1}", str(out / name)]
    log = build.dir / "harness-userprogs.log"
    with locks.locked(out.parent / ".kvm-selftests.lock"):
        try:
            run_logged(cmd, log, f"the KVM selftest {name}",
                       jail=sandbox.for_tree(build.tree, readable=(build.dir,), writable=(out,)))
        except BuildError as e:
            raise CompileError(f"{name} does not build statically here: {e}", first_compiler_error(str(e))) from e
    return out / name
