"""Debian's kernel source packages: from this machine's apt, or from a suite it does not carry.

Debian 12 carries linux-source-6.1 and -6.12. Today's kernels (7.2, 7.3) are in the trixie-backports
suite of the same archive (configs/debian-suites.yaml). Adding that suite to the system's apt sources
would make its packages upgrade candidates for the whole machine, so it is read with a private apt
state instead: its own sources list, lists and cache under the harness cache, and `apt-get download`,
which installs nothing. The archive is the one the system's own sources already name, so the
harness reaches no host the machine does not already use.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness import atomic, locks, paths, schema
from harness.errors import InfraError, UserError
from harness.kernel.arch import Arch

SUITES_FILE = paths.CONFIGS / "debian-suites.yaml"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
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
    private = _private_apt(state, "\n".join(
        f"Types: deb\nURIs: {system_archive()}\nSuites: {s.name}\nComponents: {' '.join(s.components)}\n"
        f"Signed-By: {s.keyring}\n" for s in suites))
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


def foreign_packages(arch: str, packages: tuple[str, ...]) -> Path:
    """Debian's own PACKAGES for another architecture (arm64 guests' busybox, dropbear, libc; what their programs
    link against), unpacked into one cached folder: fetched from this release's archive with a private apt state
    whose only architecture is `arch`, so that the system's dpkg never learns of it, and unpacked with `dpkg-deb
    -x`, which installs nothing. The folder is keyed by the package list: it is fetched once, and kept (the versions
    are in its versions.txt)."""
    release = _os_release().get("VERSION_CODENAME", "")
    key = hashlib.sha256(" ".join((release, *packages)).encode()).hexdigest()[:16]
    out = paths.cache_root() / "userland" / arch / key
    if (out / "versions.txt").exists():
        return out
    # one fetch at a time per architecture: parallel runs (xdist workers, matrix cells) share its apt state
    with locks.locked(paths.cache_root() / "locks" / f"userland-{arch}.lock", f"fetching {arch} packages"):
        if not (out / "versions.txt").exists():
            _fetch_foreign(arch, packages, release, out)
    return out


def _fetch_foreign(arch: str, packages: tuple[str, ...], release: str, out: Path) -> None:
    state = paths.cache_root() / "apt" / arch
    private = _private_apt(state, f"Types: deb\nURIs: {system_archive()}\nSuites: {release}\nComponents: main\n"
                           f"Architectures: {arch}\nSigned-By: {DEBIAN_KEYRING}\n", arch)
    print(f"fetching Debian {release}'s {arch} packages {', '.join(packages)} with a private apt state ({state}) ...",
          flush=True)
    _apt(["apt-get", *private, "update"], f"apt-get update of {release} ({arch})")
    versions = {p: candidate(f"{p}:{arch}", private) for p in packages}
    if missing := [p for p, v in versions.items() if v is None]:
        raise PackageError(f"Debian {release} has no {arch} package {', '.join(missing)} (configs/arches/{arch}.yaml)")
    with atomic.staged_dir(out) as tmp:
        debs = tmp / "debs"
        debs.mkdir()
        _apt(["apt-get", *private, "download", *(f"{p}:{arch}={v}" for p, v in versions.items())],
             f"apt-get download of {arch} packages", cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            _apt(["dpkg-deb", "-x", str(deb), str(tmp / "root")], f"unpacking {deb.name}")
        shutil.rmtree(debs)
        (tmp / "versions.txt").write_text("".join(f"{p}:{arch} {v}\n" for p, v in versions.items()))


def cross_libraries(arch: Arch) -> Path | None:
    """The unpacked -dev packages of another architecture its guest programs link against (configs/arches/:
    `link_packages`), or None for the host's, whose own /usr/include and /usr/lib serve."""
    if not arch.foreign or not arch.link_packages:
        return None
    return foreign_packages(arch.name, arch.link_packages) / "root"


def _private_apt(state: Path, sources: str, arch: str | None = None) -> tuple[str, ...]:
    """apt options for a state of its own under `state`: its sources, lists and cache (and, for a foreign `arch`,
    its own architecture and an empty dpkg status: nothing the system has installed counts)."""
    for d in ("lists/partial", "cache/archives/partial"):
        (state / d).mkdir(parents=True, exist_ok=True)
    atomic.write_text(state / "private.sources", sources)
    options = ("-o", f"Dir::Etc::sourcelist={state / 'private.sources'}", "-o", "Dir::Etc::sourceparts=-",
               "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}",
               "-o", "APT::Sandbox::User=root")
    if arch is None:
        return options
    (state / "status").touch()
    return (*options, "-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures={arch}",
            "-o", f"Dir::State::status={state / 'status'}")


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
