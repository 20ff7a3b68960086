"""Typed schemas for the YAML files in configs/ (and the user's own): every file is checked when it is read.

A schema is data: a `Record` of named `Field`s, each with a type built from the ones below. `load` reads a
YAML file, checks it against the schema, and returns plain Python values (mappings with every optional key
filled in with its default). The first mistake is one error, a `UserError` subclass of the caller's choice,
that names the file, the line, the key path and what was expected against what was found:

    configs/drivers/x.yaml:14: known_failures[0].tests: expected a non-empty list, each a test-name pattern
    with a word in it (not a bare wildcard), found the string 'hmm.*' (write [hmm.*] or one `- item` per line)

The strictness is the point: YAML turns a string where a list belongs into something a loop iterates letter by
letter, an unquoted 6.10 into the number 6.1, and `on` into True; a schema refuses each of them at the door.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UserError

KeyPath = tuple[str | int, ...]


class Invalid(Exception):
    """A value that does not fit its type, at a key path (the loader adds the file and line)."""

    def __init__(self, at: KeyPath, problem: str):
        super().__init__(problem)
        self.at, self.problem = at, problem


def key_path(at: KeyPath) -> str:
    """known_failures[2].tests, cases['munmap/whole'].expect[0]: how a key is written in an error."""
    out = ""
    for part in at:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[\w-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out or "the top level"


def found(value: Any) -> str:
    """What a value is, in YAML's words, for the `found` half of an error."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()} (YAML reads a bare yes/no/on/off/true/false so; quote it)"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"a mapping with keys {sorted(map(str, value))}"
    return type(value).__name__


class Type:
    """One kind of value: `check` returns the value (normalised) or raises Invalid; `describe` says what it is."""

    def check(self, value: Any, at: KeyPath) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def fail(self, value: Any, at: KeyPath, hint: str = "") -> Invalid:
        return Invalid(at, f"expected {self.describe()}, found {found(value)}{f' ({hint})' if hint else ''}")


@dataclass(frozen=True)
class Str(Type):
    """A string; `pattern` (a regex the whole string must match, said as `what`) narrows it."""

    pattern: str | None = None
    what: str = "a string"
    nonempty: bool = True

    def check(self, value: Any, at: KeyPath) -> Any:
        if not isinstance(value, str):
            hint = "quote it" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            raise self.fail(value, at, hint)
        if (self.nonempty and not value.strip()) or (self.pattern and not re.fullmatch(self.pattern, value)):
            raise self.fail(value, at)
        return value

    def describe(self) -> str:
        return self.what if self.pattern or not self.nonempty else f"{self.what} (not empty)"


@dataclass(frozen=True)
class Int(Type):
    min: int | None = None
    what: str = "an integer"

    def check(self, value: Any, at: KeyPath) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or (self.min is not None and value < self.min):
            raise self.fail(value, at)
        return value

    def describe(self) -> str:
        return self.what if self.min is None else f"{self.what} >= {self.min}"


@dataclass(frozen=True)
class Number(Type):
    """An int or a float (returned as float); `positive` excludes zero and below."""

    positive: bool = False
    what: str = "a number"

    def check(self, value: Any, at: KeyPath) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.positive and value <= 0):
            raise self.fail(value, at)
        return float(value)

    def describe(self) -> str:
        return f"a positive {self.what.removeprefix('a ')}" if self.positive else self.what


@dataclass(frozen=True)
class Bool(Type):
    def check(self, value: Any, at: KeyPath) -> Any:
        if not isinstance(value, bool):
            raise self.fail(value, at)
        return value

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Enum(Type):
    """One of fixed words, or of those a callable gives when the value is checked (a set derived from code)."""

    choices: tuple[str, ...] | Callable[[], Iterable[str]]
    what: str = "one of"

    def allowed(self) -> list[str]:
        return list(self.choices() if callable(self.choices) else self.choices)

    def check(self, value: Any, at: KeyPath) -> Any:
        if not isinstance(value, str) or value not in self.allowed():
            raise self.fail(value, at)
        return value

    def describe(self) -> str:
        allowed = self.allowed()
        return f"the word {allowed[0]}" if len(allowed) == 1 else f"{self.what} {', '.join(allowed)}"


@dataclass(frozen=True)
class Null(Type):
    def check(self, value: Any, at: KeyPath) -> Any:
        if value is not None:
            raise self.fail(value, at)
        return None

    def describe(self) -> str:
        return "null"


@dataclass(frozen=True)
class Either(Type):
    """The first of `options` the value fits (a program is a name or a mapping; a module is a name or null)."""

    options: tuple[Type, ...]

    def check(self, value: Any, at: KeyPath) -> Any:
        deepest: Invalid | None = None
        for option in self.options:
            try:
                return option.check(value, at)
            except Invalid as e:
                # a mapping that is the right kind but wrong inside says more than "expected X or Y"
                if len(e.at) > len(at) and (deepest is None or len(e.at) > len(deepest.at)):
                    deepest = e
        raise deepest or self.fail(value, at)

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)


@dataclass(frozen=True)
class ListOf(Type):
    """A YAML list. A bare string is refused, not iterated letter by letter; `one_or_more` refuses []."""

    item: Type
    one_or_more: bool = False
    unique: bool = False

    def check(self, value: Any, at: KeyPath) -> Any:
        if not isinstance(value, list):
            hint = f"write [{value}] or one `- item` per line" if isinstance(value, str) else ""
            raise self.fail(value, at, hint)
        if self.one_or_more and not value:
            raise self.fail(value, at)
        out = [self.item.check(v, (*at, i)) for i, v in enumerate(value)]
        if self.unique and (dup := next((v for i, v in enumerate(out) if v in out[:i]), None)) is not None:
            raise Invalid((*at, out.index(dup, out.index(dup) + 1)), f"{dup!r} is given twice")
        return out

    def describe(self) -> str:
        return f"a {'non-empty ' if self.one_or_more else ''}list, each {self.item.describe()}"


@dataclass(frozen=True)
class OneOrList(ListOf):
    """One value or a list of them (a matrix rule's `notifier: off` or `suite: [a, b]`); always a list after."""

    def check(self, value: Any, at: KeyPath) -> Any:
        return super().check(value if isinstance(value, list) else [value], at)

    def describe(self) -> str:
        return f"{self.item.describe()}, or a {'non-empty ' if self.one_or_more else ''}list of them"


@dataclass(frozen=True)
class MapOf(Type):
    """A mapping whose keys are all of one type and values of another (events.yaml's cases by name)."""

    key: Type
    value: Type

    def check(self, value: Any, at: KeyPath) -> Any:
        if not isinstance(value, dict):
            raise self.fail(value, at)
        return {self.key.check(k, (*at, str(k))): self.value.check(v, (*at, str(k))) for k, v in value.items()}

    def describe(self) -> str:
        return f"a mapping, each key {self.key.describe()} and each value {self.value.describe()}"


_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """A key of a Record: its type, whether it must be there (no default) and what it means (for the docs)."""

    type: Type
    doc: str = ""
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def required(type_: Type, doc: str = "") -> Field:
    return Field(type_, doc)


def optional(type_: Type, default: Any = None, doc: str = "") -> Field:
    return Field(type_, doc, default)


@dataclass(frozen=True)
class Record(Type):
    """A mapping with known keys: required ones, optional ones (their default filled in), no others."""

    fields: Mapping[str, Field]
    what: str = "a mapping"
    extra_checks: tuple[Callable[[dict, KeyPath], None], ...] = field(default=())

    def check(self, value: Any, at: KeyPath) -> Any:
        if not isinstance(value, dict):
            raise self.fail(value, at)
        if unknown := sorted(map(str, set(value) - set(self.fields))):
            raise Invalid((*at, unknown[0]), f"unknown key(s) {unknown}; allowed: {sorted(self.fields)}")
        out = {}
        for name, f in self.fields.items():
            if name in value:
                out[name] = f.type.check(value[name], (*at, name))
            elif f.required:
                raise Invalid((*at, name), f"must be given: {f.type.describe()}")
            else:
                out[name] = copy.deepcopy(f.default)  # a default [] of one file is not another's
        for extra in self.extra_checks:
            extra(out, at)
        return out

    def describe(self) -> str:
        keys = ", ".join(f"{k}{'' if f.required else '?'}" for k, f in self.fields.items())
        return f"{self.what} {{{keys}}}"


# --- files -------------------------------------------------------------------------------------------------


@dataclass
class Document:
    """A checked file: its values, and where each key was written (for errors found after the schema's)."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def where(self, at: KeyPath) -> str:
        """`FILE:LINE: KEY` for an error message: the line of the key, or of the nearest enclosing one."""
        line = next((self.lines[at[:n]] for n in range(len(at), -1, -1) if at[:n] in self.lines), None)
        return f"{self.path}{f':{line}' if line else ''}: {key_path(at)}"


def read_yaml(path: Path, error: type[UserError]) -> tuple[Any, dict[KeyPath, int]]:
    """The parsed file and the line of every key and list item (1-based); unreadable or malformed: `error`."""
    try:
        text = path.read_text()
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        said = " ".join(str(e).replace(' in "<unicode string>"', "").split())  # the file is named first
        raise error(f"{path} is not valid YAML: {said}") from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        try:
            _record_lines(node, (), lines)
        except Invalid as e:
            raise error(f"{path}:{lines[e.at]}: {key_path(e.at)}: {e.problem}") from None
    return data, lines


def _record_lines(node: yaml.Node, at: KeyPath, lines: dict[KeyPath, int]) -> None:
    """Each key's line; a key given twice in one mapping is refused (YAML would keep the last one silently)."""
    lines.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if (*at, key.value) in lines:
                    raise Invalid((*at, key.value), f"given twice (here and on line {key.start_mark.line + 1}): "
                                  "YAML would keep the last one")
                lines[(*at, key.value)] = key.start_mark.line + 1
                _record_lines(value, (*at, key.value), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, (*at, i), lines)


def check(data: Any, schema: Type, path: Path, error: type[UserError],
          lines: dict[KeyPath, int] | None = None) -> Document:
    """Values already parsed (a test's dict, a file read elsewhere) against `schema`; a misfit is `error`."""
    doc = Document(path, data, lines or {})
    try:
        doc.data = schema.check(data, ())
    except Invalid as e:
        raise error(f"{doc.where(e.at)}: {e.problem}") from None
    return doc


def load(path: Path, schema: Type, error: type[UserError], empty: Any = None) -> Document:
    """A YAML file checked against `schema`. An empty file is `empty` when given (then checked too)."""
    data, lines = read_yaml(path, error)
    return check(empty if data is None and empty is not None else data, schema, path, error, lines)


def load_named(folder: Path, name: str, kind: str, schema: Type, error: type[UserError]) -> Document:
    """configs/<folder>/<name>.yaml, or NAME as the path of a .yaml file of the user's own, checked."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
    if not path.exists() and path.parent != folder:
        raise error(f"{kind} file {path} does not exist")
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise error(f"unknown {kind} {name!r}; known: {', '.join(known)}")
    return load(path, schema, error)


# --- docs --------------------------------------------------------------------------------------------------


def markdown(schema: Record, key: str = "") -> str:
    """A table of a record's keys, then one per nested record (`known_failures[].code`): docs from the schema."""
    rows = ["| key | type | required / default | meaning |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, Record]] = []
    for name, f in schema.fields.items():
        need = "required" if f.required else f"default `{_yaml_word(f.default)}`"
        rows.append(f"| `{name}` | {f.type.describe()} | {need} | {f.doc} |")
        nested += [(f"{key}.{name}{suffix}".lstrip("."), r) for suffix, r in records(f.type)]
    out = "\n".join(rows)
    for title, record in nested:
        out += f"\n\n### `{title}`\n\n" + markdown(record, title)
    return out


def records(t: Type, suffix: str = "") -> list[tuple[str, Record]]:
    """The records inside a type, each with how its key path goes on (`[]` a list item, `.NAME` a map's)."""
    if isinstance(t, Record):
        return [(suffix, t)]
    if isinstance(t, ListOf):
        return records(t.item, suffix + ("" if isinstance(t, OneOrList) else "[]"))
    if isinstance(t, MapOf):
        return records(t.value, suffix + ".NAME")
    if isinstance(t, Either):
        return [r for o in t.options for r in records(o, suffix)]
    return []


def _yaml_word(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return f"[{', '.join(map(str, value))}]"
    return '""' if value == "" else str(value)
