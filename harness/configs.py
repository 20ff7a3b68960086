"""Every kind of YAML file in configs/, with its schema and the loader that reads it: one table, from which
come the reference of their keys (`python -m harness.configs > docs/config-keys.md`) and the test that every
file in configs/ is covered by a schema and loads (tests/test_schema.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import paths, schema
from harness.checks import drivers, expectations
from harness.fuzz import program as fuzz_program
from harness.kernel import arch, artifact_manifest, build, debian, image
from harness.matrix import spec
from harness.results import compare
from harness.vm import limits, machine


@dataclass(frozen=True)
class Kind:
    title: str
    files: str  # a glob under configs/
    about: str
    schema: schema.Type  # each lives next to its loader
    read: Callable[[Path], object]  # the loader the harness uses, on one file


def _read_machine(path: Path) -> object:
    return machine.load_profile(str(path), path.parent.name if path.parent != paths.CONFIGS / "machines" else arch.HOST)


def _read_driver(path: Path) -> object:
    return drivers.load_driver(path.stem if path.parent == paths.CONFIGS / "drivers" else str(path))


def _read_expectations(path: Path) -> object:
    """Every series the file has entries for, and the default."""
    cases = schema.load(path, expectations.FILE, expectations.ExpectationError).data["cases"].values()
    return [expectations.load(s, path) for s in ["", *sorted({s for c in cases for s in c["versions"]})]]


KINDS = (
    Kind("Machine profiles", "machines/**/*.yaml", "A QEMU guest: `harness run --machine NAME` (or a path to a "
         ".yaml file), a driver profile's `machine`, a matrix's machine axis; another architecture's under "
         "machines/ARCH/, by the same names. Read by harness/vm/machine.py.",
         machine.PROFILE, _read_machine),
    Kind("Architectures", "arches/*.yaml", "What a kernel is built for and booted as: make's ARCH=, the cross "
         "compiler, the image QEMU boots (`harness kernel --arch NAME`). Read by harness/kernel/arch.py.",
         arch.SCHEMA, lambda path: arch.load_arch(path.stem)),
    Kind("Driver profiles", "drivers/*.yaml", "A real driver under test: what its kernel needs and which suites "
         "test it (`harness driver NAME`). Read by harness/checks/drivers.py. A known failure's `tests` are fnmatch "
         "patterns, each with a word in it (no bare `*`), and each must name a test of the driver's suites: a test "
         "function of theirs, a name they ask `known_failure` about (rxe's `odp-copy`), a program run (`ID` or "
         "`ID: SUBTEST`), or a kselftest_harness test `FIXTURE[.VARIANT].TEST` of the tree, which the suite checks "
         "when it collects the tree's tests. `needs` are the guest setups of harness/checks/workloads.py (its "
         "`GuestSetup._NAME` methods).", drivers.PROFILE, _read_driver),
    Kind("Test matrices", "matrix/*.yaml", "Axes, exclude and include rules, timeouts: `harness matrix`. Read by "
         "harness/matrix/spec.py. Every value is a safe name (letters, digits and `_ . , + : / @ % = -`, no leading "
         "`-`): they reach command lines, directories and exported CI files.",
         spec.MATRIX, lambda path: spec.load(str(path))),
    Kind("Expected notifier events", "expectations/events.yaml", "What each guest workload must make the kernel "
         "send, read from mm/. Read by harness/checks/expectations.py.", expectations.FILE, _read_expectations),
    Kind("Build estimates", "build-estimates.yaml", "Measured cold builds, for the build's progress estimate. "
         "Read by harness/kernel/build.py. The file is a list of these.", build.ESTIMATES_SCHEMA,
         lambda path: schema.load(path, build.ESTIMATES_SCHEMA, build.BuildError, empty=[]).data),
    Kind("Debian suites", "debian-suites.yaml", "Suites of the system's Debian archive that kernel sources come "
         "from (with a private apt state). Read by harness/kernel/debian.py.",
         debian.SUITES_SCHEMA, debian.load_suites),
    Kind("Guest userspace", "guest-userspace.yaml", "Host files every guest image carries. Read by "
         "harness/kernel/image.py.", image.USERSPACE_SCHEMA,
         lambda path: schema.load(path, image.USERSPACE_SCHEMA, build.BuildError, empty={}).data),
    Kind("Artifact limits", "artifact-limits.yaml", "What `harness kernel --import` unpacks at most from one build "
         "artifact, checked member by member while it unpacks (`--max-files` and `--max-unpacked-mib` override "
         "the first two). Read by harness/kernel/artifact_manifest.py.",
         artifact_manifest.LIMITS_SCHEMA, artifact_manifest.load_limits),
    Kind("Fuzzing", "fuzz.yaml", "What `harness fuzz` draws (operations, areas, sizes, advice, by weight) and the "
         "invalidation each operation must make of the pages present before it. Read by harness/fuzz/program.py.",
         fuzz_program.SCHEMA, fuzz_program.load_config),
    Kind("Guest limits", "guest-limits.yaml", "How much the host takes from a guest (every read from it is bounded; "
         "going over is the FLOOD outcome). Each can be overridden for a run by `HARNESS_LIMIT_<KEY>` (e.g. "
         "`HARNESS_LIMIT_OUTPUT_BYTES=128M`). Read by harness/vm/limits.py.",
         limits.SCHEMA, lambda path: limits.load({}, path)),
)
# Not in configs/: the file a maintainer passes to `harness compare --expect-events`.
EXPECT_EVENTS = Kind("harness compare --expect-events", "", "The event changes a patch series means to make. "
                     "Read by harness/results/compare.py.",
                     compare.EXPECT_EVENTS, lambda path: compare.load_expected(path))


def markdown() -> str:
    """docs/config-keys.md: every kind of file and its keys, from the schemas themselves."""
    out = ["# Configuration keys", "",
           "Generated from the schemas (`python -m harness.configs > docs/config-keys.md`); what the files are "
           "for is in [configs](configs.md). Every file is checked "
           "against its schema when it is read, and a mistake is one error naming the file, the line, the key "
           "path (`known_failures[0].tests`) and what was expected against what was found. Unknown keys are "
           "errors. A key marked with a default may be left out."]
    for kind in (*KINDS, EXPECT_EVENTS):
        where = f"`configs/{kind.files}`" if kind.files else "a file of your own"
        out += ["", f"## {kind.title} ({where})", "", kind.about, ""]
        t = kind.schema
        if isinstance(t, schema.ListOf) and isinstance(t.item, schema.Record):
            t = t.item
        assert isinstance(t, schema.Record)
        out.append(schema.markdown(t, ""))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
