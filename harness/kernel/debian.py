"""Debian's kernel source packages: from this machine's apt, or from a suite it does not carry.

Debian 12 carries linux-source-6.1 and -6.12. Today's kernels (7.2, 7.3) are in the trixie-backports
suite of the same archive (configs/debian-suites.yaml). Adding that suite to the system's apt sources
would make its packages upgrade candidates for the whole machine, so it is read with a private apt
state instead: its own sources list, lists and cache under the harness cache, and `apt-get download`,
which installs nothing. The archive is the one the system's own sources already name, so the
harness reaches no host the machine does not already use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, paths, schema
from harness.errors import InfraError, UserError

SUITES_FILE = paths.CONFIGS / "debian-suites.yaml"
SYSTEM_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))


class PackageError(UserError):
    pass


class AptFailed(InfraError):
    """apt-get or the archive failed (the network, a mirror, the system's sources), not the request."""


@dataclass(frozen=True)
class Suite:
    name: str
    components: tuple[str, ...]
    keyring: str


def candidate(package: str, apt_options: tuple[str, ...] = ()) -> str | None:
    """The version apt would install (from the system's sources, or those of `apt_options`), or None."""
    out = subprocess.run(["apt-cache", *apt_options, "policy", package], capture_output=True, text=True).stdout
    m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
    return m[1] if m and m[1] != "(none)" else None


def install(package: str) -> None:
    """apt-get install from the system's own sources (root only)."""
    if os.geteuid() != 0:
        raise PackageError(f"{package} is not installed. As root: apt-get install {package}  "
                           "(or give your own tree with KSRC=/path/to/linux)")
    print(f"installing {package} ...", flush=True)
    proc = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise AptFailed(f"apt-get install {package} failed:\n{proc.stderr.strip()[-2000:]}")


def installed_version(package: str) -> str | None:
    out = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", package],
                         capture_output=True, text=True).stdout.split()
    return out[1] if len(out) == 2 and out[0] == "installed" else None


# Each value goes into a deb822 sources file: a word, never a newline or a space that would start another field.
_WORD = r"[a-z0-9][a-z0-9.+-]*"
SUITES_SCHEMA = schema.Record({
    "suites": schema.optional(schema.ListOf(schema.Record({
        "suite": schema.required(schema.Str(_WORD, "a suite name (trixie-backports)"), "the archive's suite"),
        "components": schema.optional(schema.ListOf(schema.Str(_WORD, "a component name (main)"), one_or_more=True),
                                      ["main"], "its components to read"),
        "keyring": schema.required(schema.Str(r"/[A-Za-z0-9_./+-]+", "the absolute path of a keyring"),
                                   "the keyring its Release file is signed with (apt's Signed-By)"),
    }, "a suite")), [], "suites of the system's Debian archive to read kernel source packages from"),
}, "a mapping")


def load_suites(path: Path = SUITES_FILE) -> list[Suite]:
    data = schema.load(path, SUITES_SCHEMA, PackageError, empty={}).data
    return [Suite(e["suite"], tuple(e["components"]), e["keyring"]) for e in data["suites"]]


def system_archive(sources: tuple[Path, ...] = SYSTEM_SOURCES, codename: str | None = None) -> str:
    """The URI of the Debian archive the system's apt sources use for its own release."""
    codename = codename or _os_release().get("VERSION_CODENAME", "")
    files = [f for p in sources for f in (sorted(p.glob("*.sources")) + sorted(p.glob("*.list")) if p.is_dir()
                                          else [p]) if f.is_file()]
    for f in files:
        for uri, suites in _entries(f.read_text(errors="replace"), deb822=f.suffix == ".sources"):
            if codename in suites:
                return uri
    raise AptFailed(f"none of the system's apt sources ({', '.join(map(str, sources))}) serves Debian "
                       f"{codename or 'this release'}: cannot tell which archive to fetch kernel sources from")


def _entries(text: str, deb822: bool) -> list[tuple[str, list[str]]]:
    """(URI, suites) of every `deb` entry: deb822 stanzas (.sources) or one-line entries (.list)."""
    out = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                out += [(uri, fields.get("Suites", "").split()) for uri in fields.get("URIs", "").split()]
    else:
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                out.append((words[1], [words[2]]))
    return out


def _os_release() -> dict[str, str]:
    text = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    return {k: v.strip('"') for k, v in re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE)}


def fetch(package: str) -> tuple[Path, str]:
    """Download PACKAGE's .deb from the extra suites with a private apt state; returns (deb, version)."""
    suites = load_suites()
    state = paths.cache_root() / "apt"
    for d in ("lists/partial", "cache/archives/partial"):
        (state / d).mkdir(parents=True, exist_ok=True)
    atomic.write_text(state / "private.sources", "\n".join(
        f"Types: deb\nURIs: {system_archive()}\nSuites: {s.name}\nComponents: {' '.join(s.components)}\n"
        f"Signed-By: {s.keyring}\n" for s in suites))
    private = ("-o", f"Dir::Etc::sourcelist={state / 'private.sources'}", "-o", "Dir::Etc::sourceparts=-",
               "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
               "-o", "APT::Sandbox::User=root")
    names = ", ".join(s.name for s in suites)
    print(f"fetching {package} from {names} with a private apt state ({state}) ...", flush=True)
    _apt(["apt-get", *private, "update"], f"apt-get update of {names}")
    version = candidate(package, private)
    if version is None:
        raise PackageError(f"{package} is in neither the system's apt sources nor {names} "
                           f"({SUITES_FILE}): Debian has no source package of that series")
    # One folder per version, filled whole or not at all: what is in it is that version's .deb.
    folder = state / "debs" / f"{package}={version}".replace(":", "_")
    if not folder.exists():
        with atomic.staged_dir(folder) as tmp:
            _apt(["apt-get", *private, "download", f"{package}={version}"], f"apt-get download {package}", cwd=tmp)
    (deb,) = folder.glob("*.deb")
    return deb, version


def _apt(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise AptFailed(f"{what} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}")


def extract_tarball(deb: Path, out: Path) -> None:
    """The usr/src/linux-source-X.Y.tar.xz inside a linux-source .deb, written to `out` (without installing)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".tar.xz") and "/usr/src/" in f"/{member.name}":
                    source = tar.extractfile(member)
                    assert source
                    with open(tmp, "wb") as f:
                        shutil.copyfileobj(source, f)
                    tmp.replace(out)
                    return
    finally:
        proc.stdout.close()
        proc.wait()
        tmp.unlink(missing_ok=True)
    raise PackageError(f"{deb} holds no usr/src/*.tar.xz: not a linux-source package")
