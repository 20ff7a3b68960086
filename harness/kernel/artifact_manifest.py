"""A build artifact's manifest (artifact.json) and the limits of an import, checked before anything uses them.

The manifest comes from whoever made the artifact: its fields become path components under the cache
(src/<package>/harness-build-<key>, configure/by-key/<version>-<key>.config, guest/<guest_programs>), a tree
to resolve (ksrc) and fragments to read. So every field has a type and a pattern, the fields that must agree
(ksrc, series, package, version, identity) are checked against each other, and a key this harness does not
know is an error: `validate` returns a manifest whose every string is safe as one path component.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import paths, schema
from harness.errors import UserError
from harness.kernel.arch import known_arches
from harness.kernel.config import NOTIFIER_AXIS

FORMAT = 1
LIMITS = paths.CONFIGS / "artifact-limits.yaml"
FRAGMENTS = paths.CONFIGS / "fragments"


class ArtifactError(UserError):
    pass


HEX16 = re.compile(r"[0-9a-f]{16}")
SERIES = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}")
VERSION = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,5}")  # tree_version() of a Debian tree: no EXTRAVERSION
PACKAGE = re.compile(r"linux-source-[0-9]{1,3}\.[0-9]{1,3}")
KSRC = re.compile(r"debian:[0-9]{1,3}\.[0-9]{1,3}")  # only Debian's trees are packed (artifact._package)
DEBIAN_VERSION = r"[0-9][A-Za-z0-9.+~:-]{0,63}"  # Debian policy 5.6.12
IDENTITY = re.compile(rf"debian:linux-source-[0-9]{{1,3}}\.[0-9]{{1,3}}={DEBIAN_VERSION}")
RELEASE = re.compile(r"[0-9][A-Za-z0-9._+~-]{0,63}")  # `make kernelrelease`
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # one path component: no dot, no slash
FRAGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_-]{0,63}){0,3}")  # debug/kasan
SETTING = re.compile(r"(CONFIG_)?[A-Za-z0-9_]{1,64}=[\x20-\x7e]{0,256}")  # --set SYM=value, printable ASCII
MADE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{4}")
TEXT = re.compile(r"[\x20-\x7e]{0,4096}")  # shown, never used as a path or a name
MAX_COUNT = 10**12
MAX_LIST = 32

Check = Callable[[Any, str], None]


def _fail(where: str, what: str) -> None:
    raise ArtifactError(f"{where}: {what}")


def pattern(regex: re.Pattern[str]) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, str) or not regex.fullmatch(value):
            _fail(where, f"{value!r:.80} is not {regex.pattern!r}")
    return check


def optional(inner: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if value is not None:
            inner(value, where)
    return check


def count(value: Any, where: str) -> None:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:  # bool is an int: excluded by the exact type
        _fail(where, f"{value!r:.80} is not a count (an integer from 0 to {MAX_COUNT})")


def number(value: Any, where: str) -> None:
    if type(value) not in (int, float) or not 0 <= value <= MAX_COUNT:
        _fail(where, f"{value!r:.80} is not a non-negative number")


def flag(value: Any, where: str) -> None:
    if type(value) is not bool:
        _fail(where, f"{value!r:.80} is not true or false")


def one_of(*choices: object) -> Check:
    def check(value: Any, where: str) -> None:
        if type(value) is not type(choices[0]) or value not in choices:
            _fail(where, f"{value!r:.80} is not one of {list(choices)}")
    return check


def list_of(item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list) or len(value) > MAX_LIST:
            _fail(where, f"not a list of at most {MAX_LIST} items")
        for i, v in enumerate(value):
            item(v, f"{where}[{i}]")
    return check


def obj(fields: dict[str, Check], required: frozenset[str] | None = None) -> Check:
    """A JSON object with these keys (all of them, or the `required` ones) and no other."""
    needed = frozenset(fields) if required is None else required

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            _fail(where, "not an object")
        if unknown := sorted(set(value) - set(fields)):
            _fail(where, f"unknown key(s) {unknown}; allowed: {sorted(fields)}")
        if missing := sorted(needed - set(value)):
            _fail(where, f"missing key(s) {missing}")
        for key, v in value.items():
            fields[key](v, f"{where}.{key}")
    return check


# The build's stamp (harness/kernel/build.py writes it): metadata, shown and never used. Stamps of older
# harnesses lack some keys, so each is optional; a key no harness writes is refused like any other.
_STAMP = obj({
    "release": pattern(RELEASE), "tree": pattern(TEXT), "identity": pattern(TEXT), "key": pattern(HEX16),
    "build_s": number, "ccache": obj({"hits": count, "misses": count}), "seeded": optional(pattern(TEXT)),
    "steps": count, "compiled": count, "from_scratch": flag, "config_sha": pattern(HEX16),
    "series": pattern(SERIES), "finished": pattern(MADE),
    "estimate": obj({"source": optional(pattern(TEXT)), "first_s": optional(number), "last_s": optional(number)}),
}, required=frozenset())

_MANIFEST_FIELDS: dict[str, Check] = {
    "format": one_of(FORMAT), "ksrc": pattern(KSRC), "package": pattern(PACKAGE), "version": pattern(VERSION),
    "identity": pattern(IDENTITY), "series": pattern(SERIES), "key": pattern(HEX16), "release": pattern(RELEASE),
    "notifier": one_of(*NOTIFIER_AXIS), "fragments": list_of(pattern(FRAGMENT)), "settings": list_of(pattern(SETTING)),
    "spec_digest": pattern(HEX16), "guest_programs": pattern(SAFE_NAME), "build": _STAMP, "config_values": count,
    "made": pattern(MADE), "files": count, "unpacked_bytes": count,
    "arch": one_of(*known_arches()),  # absent from the artifacts of before 2026-12-06: the host's
}
_MANIFEST = obj(_MANIFEST_FIELDS, required=frozenset(_MANIFEST_FIELDS) - {"arch"})


def validate(manifest: Any, where: str) -> dict[str, Any]:
    """The manifest, if it is one this harness made (an ArtifactError naming the key otherwise)."""
    if isinstance(manifest, dict) and manifest.get("format") != FORMAT and type(manifest.get("format")) is int:
        raise ArtifactError(f"{where}: artifact format {manifest['format']}, this harness reads {FORMAT}")
    _MANIFEST(manifest, where)
    m: dict[str, Any] = manifest
    series = m["series"]
    agree = {"ksrc": f"debian:{series}", "package": f"linux-source-{series}"}
    for key, wanted in agree.items():
        if m[key] != wanted:
            _fail(f"{where}.{key}", f"{m[key]!r} does not match series {series!r} (expected {wanted!r})")
    if not m["version"].startswith(f"{series}."):
        _fail(f"{where}.version", f"{m['version']!r} is not of series {series!r}")
    if not m["identity"].startswith(f"debian:{m['package']}="):
        _fail(f"{where}.identity", f"{m['identity']!r} is not a version of {m['package']}")
    for i, name in enumerate(m["fragments"]):
        fragment_file(name, f"{where}.fragments[{i}]")
    return m


def fragment_file(name: str, where: str) -> Path:
    """configs/fragments/NAME.config, which must exist here: a path would name a file of the packing machine."""
    if not FRAGMENT.fullmatch(name):
        _fail(where, f"{name!r} is not the name of a fragment under {FRAGMENTS} (such as debug/kasan)")
    path = (FRAGMENTS / f"{name}.config").resolve()
    if not path.is_relative_to(FRAGMENTS.resolve()) or not path.is_file():
        _fail(where, f"fragment {name!r} is not in this checkout ({FRAGMENTS}/{name}.config)")
    return path


@dataclass(frozen=True)
class Limits:
    """What one import unpacks at most (configs/artifact-limits.yaml)."""

    files: int
    unpacked_bytes: int
    manifest_bytes: int
    name_bytes: int
    link_target_bytes: int


_UNITS = {"max_files": 1, "max_unpacked_mib": 2**20, "max_manifest_kib": 2**10, "max_name_bytes": 1,
          "max_link_target_bytes": 1}
LIMITS_SCHEMA = schema.Record({
    "max_files": schema.required(schema.Int(min=1), "tar members of every kind (files, directories, links)"),
    "max_unpacked_mib": schema.required(schema.Int(min=1), "MiB: the sum of the regular files' sizes"),
    "max_manifest_kib": schema.required(schema.Int(min=1), "KiB: artifact.json, read into memory first"),
    "max_name_bytes": schema.required(schema.Int(min=1), "bytes: a member's path"),
    "max_link_target_bytes": schema.required(schema.Int(min=1), "bytes: a symbolic link's target"),
})


def load_limits(path: Path = LIMITS, files: int | None = None, unpacked_mib: int | None = None) -> Limits:
    """The limits of `path`, with `files` and `unpacked_mib` (from the command line) in place of its own."""
    data = schema.load(path, LIMITS_SCHEMA, ArtifactError).data
    for flag_name, value in (("--max-files", files), ("--max-unpacked-mib", unpacked_mib)):
        if value is not None and value <= 0:
            raise ArtifactError(f"{flag_name} must be a positive integer, got {value}")
    scaled = {key: data[key] * unit for key, unit in _UNITS.items()}
    return Limits(files or scaled["max_files"], (unpacked_mib or 0) * 2**20 or scaled["max_unpacked_mib"],
                  scaled["max_manifest_kib"], scaled["max_name_bytes"], scaled["max_link_target_bytes"])
