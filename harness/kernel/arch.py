"""The architectures a kernel is built for (configs/arches/NAME.yaml): make's ARCH=, the cross compiler, the image
QEMU boots, the defconfig; what --arch names. The host is x86-64; another architecture is cross-built.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from harness import paths, schema
from harness.errors import InfraError, UserError

HOST = "x86_64"  # the default everywhere an architecture is implied


class ArchError(UserError):
    """An unknown or malformed architecture."""


class CompilerMissing(InfraError):
    """The architecture's compiler is not installed (the message names its package): the machine's to fix."""


@dataclass(frozen=True)
class Arch:
    name: str
    description: str
    kbuild: str  # make's ARCH=
    symbol: str  # the Kconfig symbol a .config of this architecture sets (X86_64, ARM64)
    srcarch: str  # arch/<srcarch>/: what Kconfig reads as $(SRCARCH)
    cross_compile: str  # CROSS_COMPILE=, "" for the host's compiler
    compiler_package: str
    image: str  # the make target QEMU boots
    image_path: str  # where that target lands in the build directory
    defconfig: str
    tiny: str | None  # the architecture's tiny.config, which `make tinyconfig` merges
    userland: tuple[str, ...]  # its Debian packages a guest image unpacks; () for the host's own files
    link_packages: tuple[str, ...]  # its Debian -dev packages static guest programs link against; () for the host's
    qemu: str  # the qemu-system binary that boots it
    qemu_package: str
    elf_machine: int  # e_machine of its ELF files (EM_X86_64, EM_AARCH64)
    triplet: str  # Debian's multiarch name: its library directories, /usr/lib/<triplet>

    @property
    def foreign(self) -> bool:
        """Cross-built, booted under TCG only, its guest userland from Debian's packages of the architecture."""
        return self.name != HOST

    @property
    def gcc(self) -> str:
        return f"{self.cross_compile}gcc"

    def make_vars(self) -> list[str]:
        """What every make of a tree for this architecture is given (ccache in front of both compilers)."""
        cross = [f"CROSS_COMPILE={self.cross_compile}"] if self.cross_compile else []
        return [f"ARCH={self.kbuild}", *cross, f"CC=ccache {self.gcc}", "HOSTCC=ccache gcc"]

    def require_compiler(self) -> None:
        if not shutil.which(self.gcc):
            raise CompilerMissing(f"{self.gcc} not found: apt-get install {self.compiler_package}")


SCHEMA = schema.Record({
    "description": schema.required(schema.Str(), "what the architecture is, and how it is built and booted"),
    "kbuild": schema.required(schema.Str(r"\w+", "a make ARCH= value"), "make's ARCH="),
    "symbol": schema.required(schema.Str(r"[A-Z0-9_]+", "a Kconfig symbol"), "what its .config sets"),
    "srcarch": schema.required(schema.Str(r"\w+", "a directory of arch/"), "the tree's arch/ directory"),
    "cross_compile": schema.optional(schema.Str(r"[\w.-]*", "a compiler prefix", nonempty=False), "",
                                     "make's CROSS_COMPILE= (empty: the host's gcc)"),
    "compiler_package": schema.required(schema.Str(r"[\w.+-]+", "a Debian package"), "the Debian package of its gcc"),
    "image": schema.required(schema.Str(r"\w+", "a make target"), "the make target QEMU boots with -kernel"),
    "image_path": schema.required(schema.Str(r"arch/\S+", "a path in the build directory"), "where it lands"),
    "defconfig": schema.required(schema.Str(r"arch/\S+", "a path in the tree"), "the defconfig base"),
    "tiny": schema.optional(schema.Either((schema.Str(r"arch/\S+", "a path in the tree"), schema.Null())), None,
                            "the architecture's tiny.config, merged by `make tinyconfig` (null: none)"),
    "userland": schema.optional(schema.ListOf(schema.Str(r"[a-z0-9][a-z0-9.+-]*", "a Debian package")), [],
                                "its Debian packages unpacked into its guest images (empty: the host's files)"),
    "link_packages": schema.optional(schema.ListOf(schema.Str(r"[a-z0-9][a-z0-9.+-]*", "a Debian package")), [],
                                     "its Debian -dev packages guest programs link against (empty: the host's)"),
    "qemu": schema.required(schema.Str(r"qemu-system-\w+", "a qemu-system binary"), "the QEMU that boots it"),
    "qemu_package": schema.required(schema.Str(r"[\w.+-]+", "a Debian package"), "the Debian package of that QEMU"),
    "triplet": schema.required(schema.Str(r"[\w-]+", "a GNU triplet"), "Debian's multiarch name (x86_64-linux-gnu)"),
    "elf_machine": schema.required(schema.Int(min=1), "e_machine of its ELF files (62: x86-64, 183: AArch64)"),
}, "an architecture")


def known_arches() -> list[str]:
    return sorted(p.stem for p in (paths.CONFIGS / "arches").glob("*.yaml"))


def arch_of(values: Mapping[str, str]) -> Arch:
    """The architecture a .config (its symbol values) is for; the host's when it names none."""
    return next((a for a in map(load_arch, known_arches()) if values.get(a.symbol) == "y"), load_arch(HOST))


@functools.cache
def load_arch(name: str = HOST) -> Arch:
    if name not in known_arches():
        raise ArchError(f"unknown architecture {name!r}; known: {', '.join(known_arches())} (configs/arches/)")
    data = schema.load(paths.CONFIGS / "arches" / f"{name}.yaml", SCHEMA, ArchError).data
    return Arch(name=name, **(data | {key: tuple(data[key]) for key in ("userland", "link_packages")}))
