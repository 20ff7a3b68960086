"""Test matrices: configs/matrix/NAME.yaml expanded into cells, each one `harness run` with stable id.

A matrix names five axes (kernel, notifier, fragment, machine, suite); its cells are their product,
minus the `exclude` rules, plus the `include` entries. A cell's id comes from its values alone, in a
fixed axis order (e.g. `6.12-on-default-notifier_events`, `6.12-on-kasan-default-events` with the
debug/kasan fragment), so it stays the same across runs and when the YAML is reordered: results of
two runs are compared cell by cell through it.

    description: what the matrix is for
    axes:
      kernel: [debian:6.12, debian:6.1]     # debian:X.Y or a path to a tree
      notifier: [on, off]
      fragment: [none, debug/kasan]         # an extra config fragment (harness run --fragment); default none
      machine: [default, virtio-gpu]        # configs/machines/NAME.yaml
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

import yaml

from harness import paths
from harness.errors import UserError
from harness.kernel.config import fragment_path
from harness.kernel.kconfig import ConfigError
from harness.results.cell import DEFAULT_TIMEOUT_S, Cell, suite_id
from harness.results.cell import kernel_id as kernel_id  # the matrix's callers name cells through spec too

AXES = ("kernel", "notifier", "fragment", "machine", "suite")  # also the order of the parts of a cell id
DEFAULTS = {"kernel": ["debian:6.12"], "notifier": ["on"], "fragment": [""], "machine": ["default"]}
NOTIFIER_VALUES = ("on", "off")
DEFAULT_BUILD_TIMEOUT_S = 7200.0
_TOP_KEYS = {"description", "axes", "include", "exclude", "timeout", "timeouts", "build_timeout"}


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


def load(name: str) -> Matrix:
    path = find(name)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise MatrixError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    return expand(data, path)


def expand(data: Any, path: Path) -> Matrix:
    """Validate a parsed matrix file and expand it into cells; every error names the file and the key."""
    if not isinstance(data, dict):
        raise MatrixError(f"{path}: expected a mapping with keys {sorted(_TOP_KEYS)}")
    if unknown := set(data) - _TOP_KEYS:
        raise MatrixError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    axes_in = data.get("axes")
    if not isinstance(axes_in, dict):
        raise MatrixError(f"{path}: `axes` must be a mapping of {', '.join(AXES)} to lists of values")
    if unknown := set(axes_in) - set(AXES):
        raise MatrixError(f"{path}: unknown axis {sorted(unknown)}; the axes are {', '.join(AXES)}")
    if "suite" not in axes_in:
        raise MatrixError(f"{path}: axes.suite is required (suite names, paths, or all)")
    axes = {a: _axis_values(a, axes_in.get(a, DEFAULTS.get(a)), path, "axes") for a in AXES}

    product = [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*(axes[a] for a in AXES))]
    cells = product
    for n, rule in enumerate(_rules(data, "exclude", path), 1):
        match = _rule_values(rule, axes, path, f"exclude rule {n}")
        kept = [c for c in cells if not _matches(c, match)]
        if len(kept) == len(cells):
            raise MatrixError(f"{path}: exclude rule {n} {rule} matches no cell")
        if not kept:
            raise MatrixError(f"{path}: exclude rule {n} {rule} removes every remaining cell: the matrix would be "
                              "empty")
        cells = kept
    for n, entry in enumerate(_rules(data, "include", path), 1):
        if missing := [a for a in AXES if a not in entry and a != "fragment"]:  # fragment: none unless given
            raise MatrixError(f"{path}: include entry {n} {entry} lacks {', '.join(missing)}: an include is a "
                              f"whole cell, with a value for each of {', '.join(AXES)}")
        values = {a: _axis_values(a, entry.get(a, DEFAULTS[a]) if a == "fragment" else entry[a], path,
                                  f"include entry {n}") for a in AXES}
        if unknown := set(entry) - set(AXES):
            raise MatrixError(f"{path}: include entry {n}: unknown axis {sorted(unknown)}")
        cells += [dict(zip(AXES, combo, strict=True)) for combo in itertools.product(*(values[a] for a in AXES))]

    default_timeout = _seconds(data.get("timeout", DEFAULT_TIMEOUT_S), path, "timeout")
    known = {a: sorted({c[a] for c in cells} | set(axes[a])) for a in AXES}
    timeout_rules = []
    for n, rule in enumerate(_rules(data, "timeouts", path), 1):
        if "timeout" not in rule:
            raise MatrixError(f"{path}: timeouts rule {n} {rule} has no `timeout` (seconds)")
        match = _rule_values({k: v for k, v in rule.items() if k != "timeout"}, known, path, f"timeouts rule {n}")
        if not any(_matches(c, match) for c in cells):
            raise MatrixError(f"{path}: timeouts rule {n} {rule} matches no cell")
        timeout_rules.append((match, _seconds(rule["timeout"], path, f"timeouts rule {n}")))

    out: dict[str, Cell] = {}
    for c in cells:
        timeout = default_timeout
        for match, seconds in timeout_rules:
            timeout = seconds if _matches(c, match) else timeout
        cell = Cell(c["kernel"], c["notifier"], c["machine"], c["suite"], timeout, c["fragment"])
        same = out.get(cell.id)
        if same and same.values() != cell.values():
            raise MatrixError(f"{path}: two different cells have the id {cell.id!r}: {same.values()} and "
                              f"{cell.values()} (kernel trees with the same directory name?)")
        out.setdefault(cell.id, cell)  # an include that repeats an existing cell adds nothing
    description = str(data.get("description", "")).strip()
    build_timeout = _seconds(data.get("build_timeout", DEFAULT_BUILD_TIMEOUT_S), path, "build_timeout")
    return Matrix(path.stem, path, description, tuple(out.values()), build_timeout)


def _rules(data: dict, key: str, path: Path) -> list[dict]:
    rules = data.get(key) or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) and r for r in rules):
        raise MatrixError(f"{path}: `{key}` must be a list of mappings such as {{notifier: off, suite: x}}")
    return rules


def _rule_values(rule: dict, known: dict[str, list[str]], path: Path, where: str) -> dict[str, set[str]]:
    """A rule's values per axis, each of which must be one the matrix has."""
    match = {}
    for axis, raw in rule.items():
        if axis not in AXES:
            raise MatrixError(f"{path}: {where}: unknown axis {axis!r}; the axes are {', '.join(AXES)}")
        values = _axis_values(axis, raw, path, where)
        if unknown := [v for v in values if v not in known[axis]]:
            raise MatrixError(f"{path}: {where}: unknown value {', '.join(map(repr, unknown))} for axis {axis}; "
                              f"the matrix has: {', '.join(known[axis])}")
        match[axis] = set(values)
    return match


def _matches(cell: dict[str, str], match: dict[str, set[str]]) -> bool:
    return all(cell[axis] in values for axis, values in match.items())


def _axis_values(axis: str, raw: Any, path: Path, where: str) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    if not items or any(v is None or isinstance(v, (dict, list)) for v in items):
        raise MatrixError(f"{path}: {where}: axis {axis} needs one or more plain values, got {raw!r}")
    values: list[str] = []
    for v in items:
        for norm in _normalise(axis, v, path, where):
            if norm not in values:
                values.append(norm)
    return values


def _normalise(axis: str, v: Any, path: Path, where: str) -> list[str]:
    if axis == "notifier":
        # YAML 1.1 reads a bare on/off as a boolean: take it back as the word that was written.
        word = {True: "on", False: "off"}.get(v, str(v)) if isinstance(v, bool) else str(v)
        if word not in NOTIFIER_VALUES:
            raise MatrixError(f"{path}: {where}: unknown value {v!r} for axis notifier; allowed: on, off")
        return [word]
    text = str(v)
    if axis == "kernel":
        if re.fullmatch(r"debian:\d+\.\d+", text) or Path(text).expanduser().is_dir():
            return [text]
        raise MatrixError(f"{path}: {where}: unknown value {text!r} for axis kernel: give debian:X.Y (Debian's "
                          "linux-source-X.Y) or the path of a kernel tree")
    if axis == "fragment":
        if text in ("", "none"):
            return [""]
        try:
            fragment_path(text)
        except ConfigError as e:
            raise MatrixError(f"{path}: {where}: axis fragment: {e}") from None
        return [text]
    if axis == "machine":
        known = sorted(p.stem for p in (paths.CONFIGS / "machines").glob("*.yaml"))
        if text not in known:
            raise MatrixError(f"{path}: {where}: unknown value {text!r} for axis machine; the profiles in "
                              f"configs/machines/ are: {', '.join(known)}")
        return [text]
    return resolve_suites(text, path, where)


def all_suites() -> list[str]:
    return [str(p.relative_to(paths.REPO)) for p in sorted((paths.REPO / "suites").glob("test_*.py"))]


def resolve_suites(text: str, path: Path, where: str) -> list[str]:
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
    raise MatrixError(f"{path}: {where}: unknown suite {text!r}: no {candidates[0]}; the suites are: {names} "
                      "(or all, or a path to a pytest file)")


def _seconds(v: Any, path: Path, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise MatrixError(f"{path}: {where}: expected a positive number of seconds, got {v!r}")
    return float(v)
