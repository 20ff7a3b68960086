"""Test matrices: configs/matrix/NAME.yaml expanded into cells, each one `harness run` with stable id.

A matrix names six axes (kernel, arch, notifier, fragment, machine, suite); its cells are their product,
minus the `exclude` rules, plus the `include` entries. A cell's id comes from its values alone, in a
fixed axis order (e.g. `6.12-on-default-notifier_events`, `6.12-on-kasan-default-events` with the
debug/kasan fragment, `7.3-arm64-on-default-events` on arm64), so it stays the same across runs and when the
YAML is reordered: results of two runs are compared cell by cell through it.

    description: what the matrix is for
    axes:
      kernel: [debian:6.12, debian:6.1]     # debian:X.Y or a path to a tree
      arch: [x86_64, arm64]                 # configs/arches/NAME.yaml; default x86_64
      notifier: [on, off]
      fragment: [none, debug/kasan]         # an extra config fragment (harness run --fragment); default none
      machine: [default, virtio-gpu]        # configs/machines/NAME.yaml (arm64: configs/machines/arm64/NAME.yaml)
      suite: [all]                          # NAME (suites/test_NAME.py), a path, or all (suites/test_*.py)
    exclude:                                # a rule drops the cells that match all of its keys
      - {notifier: off, suite: notifier_events}
    include:                                # extra cells: every axis, one value or a list each
      - {kernel: debian:6.12, notifier: on, machine: virtio-gpu, suite: notifier_events}
    timeout: 1200                           # seconds per cell (default 1200)
    timeouts:                               # per-cell overrides; the last matching rule wins
      - {kernel: debian:6.1, timeout: 1800}
    build_timeout: 7200                     # seconds per kernel build
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import paths, schema
from harness.errors import UserError
from harness.kernel.arch import HOST, known_arches
from harness.kernel.config import fragment_path
from harness.kernel.kconfig import ConfigError
from harness.results.cell import DEFAULT_TIMEOUT_S, Cell, suite_id
from harness.results.cell import kernel_id as kernel_id  # the matrix's callers name cells through spec too

AXES = ("kernel", "arch", "notifier", "fragment", "machine", "suite")  # also the order of the parts of a cell id
DEFAULTS = {"kernel": ["debian:6.12"], "arch": [HOST], "notifier": ["on"], "fragment": [""], "machine": ["default"]}
NOTIFIER_VALUES = ("on", "off")
DEFAULT_BUILD_TIMEOUT_S = 7200.0


class MatrixError(UserError):
    """A matrix that cannot be used as written: the message names the file and what to fix."""


@dataclass(frozen=True)
class Matrix:
    name: str
    path: Path
    description: str
    cells: tuple[Cell, ...]
    build_timeout_s: float = DEFAULT_BUILD_TIMEOUT_S

    def select(self, ids: Iterable[str]) -> list[Cell]:
        """The cells with these ids (all of them when none are given), in matrix order."""
        wanted = list(ids)
        if not wanted:
            return list(self.cells)
        by_id = {c.id: c for c in self.cells}
        if unknown := [i for i in wanted if i not in by_id]:
            raise MatrixError(f"{self.path}: no cell {', '.join(map(repr, unknown))} in matrix {self.name!r}; "
                              f"`harness matrix list {self.name}` prints its {len(by_id)} cell ids")
        return [c for c in self.cells if c.id in wanted]


def matrix_dir() -> Path:
    return paths.CONFIGS / "matrix"


def known_matrices() -> list[str]:
    return sorted(p.stem for p in matrix_dir().glob("*.yaml"))


def find(name: str) -> Path:
    """A matrix by name (configs/matrix/NAME.yaml) or by path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    path = matrix_dir() / f"{name}.yaml"
    if path.exists():
        return path
    raise MatrixError(f"unknown matrix {name!r}: no {path}; known: {', '.join(known_matrices()) or 'none'} "
                      "(or give the path of a .yaml file)")


# Every name of a matrix reaches a command line, a directory or an exported CI file: only characters no shell,
# path or YAML reads specially, and never a leading dash (an option).
SAFE = r"(?!-)(~/)?[A-Za-z0-9_.,+:/@%=-]+"
SAFE_ID = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"  # a cell id: a directory name and a CI job name
_SAFE = schema.Str(SAFE, "a safe name or path (letters, digits, _ . , + : / @ % = -; no leading -)")
_AXIS_TYPES: dict[str, schema.Type] = {
    "kernel": _SAFE, "arch": _SAFE, "notifier": schema.Either((_SAFE, schema.Bool())), "fragment": _SAFE,
    "machine": schema.Str(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", "a profile name of configs/machines/"), "suite": _SAFE}
_AXIS_DOCS = {"kernel": "debian:X.Y or the path of a kernel tree", "arch": "configs/arches/NAME.yaml",
              "notifier": "on, off",
              "fragment": "none, or an extra config fragment (debug/kasan: configs/fragments/debug/kasan.config)",
              "machine": "configs/machines/NAME.yaml (another arch's: configs/machines/ARCH/)",
              "suite": "NAME (suites/test_NAME.py), a path, or all"}


def _axes(required: tuple[str, ...], doc: str = "") -> dict[str, schema.Field]:
    """The six axes as keys of a mapping, `required` ones must be given; a value or a list of values each."""
    fields = {}
    for a in AXES:
        t = schema.OneOrList(_AXIS_TYPES[a], one_or_more=True)
        text = _AXIS_DOCS[a] + (f"{doc}{', '.join(DEFAULTS[a]) or 'none'}" if doc and a in DEFAULTS else "")
        fields[a] = schema.required(t, text) if a in required else schema.optional(t, None, text)
    return fields


def _not_empty(rule: dict, at: schema.KeyPath) -> None:
    if all(v is None for k, v in rule.items() if k != "timeout"):
        raise schema.Invalid(at, f"a rule names one or more axes ({', '.join(AXES)}), found none")


_SECONDS = schema.Number(positive=True, what="a number of seconds")
MATRIX = schema.Record({
    "description": schema.optional(schema.Str(nonempty=False), "", "what the matrix is for"),
    "axes": schema.required(schema.Record(_axes(("suite",), "; when not given: "), "the axes"),
                            "values per axis; the cells are their product"),
    "exclude": schema.optional(schema.ListOf(schema.Record(_axes(()), "an exclude rule", (_not_empty,))), [],
                               "a rule drops the cells that match all of its axes"),
    "include": schema.optional(schema.ListOf(schema.Record(_axes(("kernel", "notifier", "machine", "suite")),
                                                           "an include entry")), [],
                               "extra cells: a value or a list for each axis (fragment: none unless given)"),
    "timeout": schema.optional(_SECONDS, DEFAULT_TIMEOUT_S, "seconds per cell"),
    "timeouts": schema.optional(schema.ListOf(schema.Record(
        {**_axes(()), "timeout": schema.required(_SECONDS, "seconds for the cells it matches")}, "a timeouts rule",
        (_not_empty,))), [], "per-cell timeouts; the last matching rule wins"),
    "build_timeout": schema.optional(_SECONDS, DEFAULT_BUILD_TIMEOUT_S, "seconds per kernel build"),
}, "a mapping")


def load(name: str) -> Matrix:
    path = find(name)
    data, lines = schema.read_yaml(path, MatrixError)
    return expand(data, path, lines)


def expand(data: Any, path: Path, lines: dict[schema.KeyPath, int] | None = None) -> Matrix:
    """Validate a parsed matrix file and expand it into cells; every error names the file and the key."""
    doc = schema.check(data, MATRIX, path, MatrixError, lines)
    top = doc.data
    axes = {a: _axis_values(a, top["axes"][a] or DEFAULTS.get(a, []), doc, ("axes", a)) for a in AXES}

    cells = [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*(axes[a] for a in AXES))]
    for n, rule in enumerate(top["exclude"]):
        match = _rule_values(rule, axes, doc, ("exclude", n))
        kept = [c for c in cells if not _matches(c, match)]
        if len(kept) == len(cells):
            raise MatrixError(f"{doc.where(('exclude', n))}: the exclude rule {_shown(rule)} matches no cell")
        if not kept:
            raise MatrixError(f"{doc.where(('exclude', n))}: the exclude rule {_shown(rule)} removes every "
                              "remaining cell: the matrix would be empty")
        cells = kept
    for n, entry in enumerate(top["include"]):
        values = {a: _axis_values(a, entry[a] or DEFAULTS[a], doc, ("include", n, a)) for a in AXES}
        cells += [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*(values[a] for a in AXES))]

    known = {a: sorted({c[a] for c in cells} | set(axes[a])) for a in AXES}
    timeout_rules = []
    for n, rule in enumerate(top["timeouts"]):
        match = _rule_values({k: v for k, v in rule.items() if k != "timeout"}, known, doc, ("timeouts", n))
        if not any(_matches(c, match) for c in cells):
            raise MatrixError(f"{doc.where(('timeouts', n))}: the timeouts rule {_shown(rule)} matches no cell")
        timeout_rules.append((match, rule["timeout"]))

    out: dict[str, Cell] = {}
    for c in cells:
        timeout = top["timeout"]
        for match, seconds in timeout_rules:
            timeout = seconds if _matches(c, match) else timeout
        cell = Cell(c["kernel"], c["notifier"], c["machine"], c["suite"], timeout, c["fragment"], c["arch"])
        if not _profile_path(cell.machine, cell.arch).exists():
            raise MatrixError(f"{path}: the cell {cell.id} asks for machine {cell.machine!r}, which has no {cell.arch} "
                              f"profile ({_profile_path(cell.machine, cell.arch).relative_to(paths.REPO)}): exclude "
                              f"the cell or add the profile")
        if not re.fullmatch(SAFE_ID, cell.id):
            raise MatrixError(f"{path}: the cell {cell.values()} would have the id {cell.id!r}, which is no safe name "
                              f"({SAFE_ID}): rename the file or tree it comes from")
        same = out.get(cell.id)
        if same and same.values() != cell.values():
            raise MatrixError(f"{path}: two different cells have the id {cell.id!r}: {same.values()} and "
                              f"{cell.values()} (kernel trees with the same directory name?)")
        out.setdefault(cell.id, cell)  # an include that repeats an existing cell adds nothing
    return Matrix(path.stem, path, top["description"].strip(), tuple(out.values()), top["build_timeout"])


def _shown(rule: dict) -> dict:
    return {k: v for k, v in rule.items() if v is not None}


def _rule_values(rule: dict, known: dict[str, list[str]], doc: schema.Document,
                 at: schema.KeyPath) -> dict[str, set[str]]:
    """A rule's values per axis, each of which must be one the matrix has."""
    match = {}
    for axis, raw in rule.items():
        if raw is None:
            continue
        values = _axis_values(axis, raw, doc, (*at, axis))
        if unknown := [v for v in values if v not in known[axis]]:
            raise MatrixError(f"{doc.where((*at, axis))}: unknown value {', '.join(map(repr, unknown))} for axis "
                              f"{axis}; the matrix has: {', '.join(known[axis])}")
        match[axis] = set(values)
    return match


def _matches(cell: dict[str, str], match: dict[str, set[str]]) -> bool:
    return all(cell[axis] in values for axis, values in match.items())


def _axis_values(axis: str, items: list, doc: schema.Document, at: schema.KeyPath) -> list[str]:
    values: list[str] = []
    for n, v in enumerate(items):
        for norm in _normalise(axis, v, doc.where((*at, n) if len(items) > 1 else at)):
            if norm not in values:
                values.append(norm)
    return values


def _normalise(axis: str, v: Any, where: str) -> list[str]:
    if axis == "notifier":
        # YAML 1.1 reads a bare on/off as a boolean: take it back as the word that was written.
        word = {True: "on", False: "off"}.get(v, str(v)) if isinstance(v, bool) else str(v)
        if word not in NOTIFIER_VALUES:
            raise MatrixError(f"{where}: unknown value {v!r} for axis notifier; allowed: on, off")
        return [word]
    text = str(v)
    if axis == "kernel":
        if re.fullmatch(r"debian:\d+\.\d+", text) or Path(text).expanduser().is_dir():
            return [text]
        raise MatrixError(f"{where}: unknown value {text!r} for axis kernel: give debian:X.Y (Debian's "
                          "linux-source-X.Y) or the path of a kernel tree")
    if axis == "fragment":
        if text in ("", "none"):
            return [""]
        try:
            fragment_path(text)
        except ConfigError as e:
            raise MatrixError(f"{where}: axis fragment: {e}") from None
        return [text]
    if axis == "arch":
        if text not in known_arches():
            raise MatrixError(f"{where}: unknown value {text!r} for axis arch; configs/arches/ has: "
                              f"{', '.join(known_arches())}")
        return [text]
    if axis == "machine":  # a profile of some architecture; each cell's own is checked once its arch is known
        known = sorted({p.stem for a in known_arches() for p in _profile_path("*", a).parent.glob("*.yaml")})
        if text not in known:
            raise MatrixError(f"{where}: unknown value {text!r} for axis machine; the profiles in "
                              f"configs/machines/ are: {', '.join(known)}")
        return [text]
    return resolve_suites(text, where)


def _profile_path(machine: str, arch: str) -> Path:
    return paths.CONFIGS / "machines" / ("" if arch == HOST else arch) / f"{machine}.yaml"


def all_suites() -> list[str]:
    return [str(p.relative_to(paths.REPO)) for p in sorted((paths.REPO / "suites").glob("test_*.py"))]


def resolve_suites(text: str, where: str) -> list[str]:
    """`all`, a name (notifier_events -> suites/test_notifier_events.py) or a path; repo-relative if inside."""
    if text == "all":
        return all_suites()
    candidates = [Path(text), paths.REPO / text] if "/" in text or text.endswith(".py") else [
        paths.REPO / "suites" / f"test_{text}.py", paths.REPO / "suites" / f"{text}.py"]
    for c in candidates:
        if c.is_file():
            c = c.resolve()
            return [str(c.relative_to(paths.REPO)) if c.is_relative_to(paths.REPO) else str(c)]
    names = ", ".join(suite_id(s) for s in all_suites())
    raise MatrixError(f"{where}: unknown suite {text!r}: no {candidates[0]}; the suites are: {names} "
                      "(or all, or a path to a pytest file)")
