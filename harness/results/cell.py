"""A matrix cell's values and the names made of them: the record that results, the matrix runner and the
reports share. Expanding a matrix file into cells is harness/matrix/spec.py; here is only what a cell
is, so that the results model can read cell.json without depending on the matrix package."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.kernel.arch import HOST

DEFAULT_TIMEOUT_S = 1200.0


@dataclass(frozen=True)
class Cell:
    kernel: str  # as given: debian:6.12 or a path
    notifier: str  # on | off
    machine: str  # a configs/machines profile
    suite: str  # repo-relative path when inside the repo, else absolute
    timeout_s: float = DEFAULT_TIMEOUT_S
    fragment: str = ""  # an extra config fragment (debug/kasan), "" for none
    arch: str = HOST  # configs/arches/

    @property
    def id(self) -> str:
        return "-".join((kernel_label(self.kernel, self.notifier, self.fragment, self.arch), self.machine,
                         suite_id(self.suite)))

    def values(self) -> dict[str, str]:
        return {"kernel": self.kernel, "arch": self.arch, "notifier": self.notifier, "fragment": self.fragment,
                "machine": self.machine, "suite": self.suite}

    def kernel_args(self) -> list[str]:
        """What picks this cell's kernel, for `harness run` and `harness kernel`."""
        return kernel_args(self.kernel, self.notifier, self.fragment, self.arch)

    def run_args(self, test: str | None = None) -> list[str]:
        """`harness run` arguments for this cell, or for one of its tests (by pytest node id)."""
        args = ["run", *self.kernel_args(), "--machine", self.machine]
        if test is None:
            return [*args, self.suite]
        name = test.rsplit("::", 1)[-1]
        if re.fullmatch(r"\w+", name):
            return [*args, self.suite, "-k", name]
        return [*args, test]  # a parametrized id ("test_x[a-b]") is not a -k expression; its node id is exact

    def reproducer(self, test: str | None = None) -> str:
        return shlex.join(["harness", *self.run_args(test)])

    def build_reproducer(self) -> str:
        return shlex.join(["harness", "kernel", *self.kernel_args()])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.values(), "timeout_s": self.timeout_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        return cls(d["kernel"], d["notifier"], d["machine"], d["suite"], float(d.get("timeout_s", DEFAULT_TIMEOUT_S)),
                   d.get("fragment", ""), d.get("arch", HOST))



def kernel_label(kernel: str, notifier: str, fragment: str, arch: str) -> str:
    """How a cell id begins, and a CI build job's kernel is named: 6.12-on, 6.12-on-kasan, 7.3-arm64-on. No part at all
    for no fragment and the host's architecture: ids stay as they were before either axis."""
    arch_part = (arch,) if arch != HOST else ()
    frag = (Path(fragment).stem,) if fragment else ()
    return "-".join((kernel_id(kernel), *arch_part, notifier, *frag))


def kernel_args(kernel: str, notifier: str, fragment: str, arch: str) -> list[str]:
    """The options that pick a kernel, for `harness run` and `harness kernel`: a cell's, a CI build job's."""
    return ["--kernel-src", kernel, *(["--arch", arch] if arch != HOST else []), "--notifier", notifier,
            *(["--fragment", fragment] if fragment else [])]


def kernel_id(kernel: str) -> str:
    if kernel.startswith("debian:"):
        return kernel.removeprefix("debian:")
    return re.sub(r"[^A-Za-z0-9_.]+", "_", Path(kernel).name) or "tree"


def suite_id(suite: str) -> str:
    return Path(suite).stem.removeprefix("test_")
