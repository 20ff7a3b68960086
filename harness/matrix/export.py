"""`harness matrix export NAME --ci github|gitlab`: a CI pipeline that builds each kernel once and fans the cells out.

    build (one job per distinct kernel: tree x notifier x fragment)
      `harness kernel ... --pack` -> artifact kernel-<kernel>.tar.zst (harness/kernel/artifact.py), and its sha256
      as the job's output (GitHub: $GITHUB_OUTPUT; GitLab: a dotenv report)
    cells (one job per cell, each needing its kernel's build job)
      download the artifact, `harness kernel --import` it with `--sha256` (the build job's, which did not come
      through the artifact store), `harness matrix run NAME --cell ID`: no kernel compile (the imported tree has
      no kernel sources, and the job installs no kernel build tools)
    report (whatever the cells did)
      every cell's results merged: report.html, summary.json, junit.xml

Every job runs in a stock Debian 12 container and installs what it uses first (it has no make, no python3).
Build jobs install everything (`make deps`, which includes the kernel sources); cell jobs only what a cell runs
(QEMU, the image's tools, gcc and make for modules and programs built against the imported build). Timeouts
come from the matrix: a build job's is the matrix's build timeout, a cell's its own, each plus the setup.
The ccache of a build job is keyed by its kernel (tree, notifier, fragment) and by the fragments' and the
kernel stages' code. On GitHub's hosted runners /dev/kvm is passed into the cell containers (the harness
probes it by booting and falls back to TCG); GitLab's shared runners have no KVM, so guests run under TCG.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from harness import paths
from harness.kernel.arch import HOST
from harness.kernel.build import content_key
from harness.matrix.spec import Cell, Matrix
from harness.results.cell import kernel_args, kernel_label

CONTAINER = "debian:12"
BUILD_SETUP_MINUTES = 20  # make deps: Debian packages (the kernel sources among them) and the virtualenv
CELL_SETUP_MINUTES = 15  # the cell's packages, the virtualenv, downloading and importing the kernel
REPORT_MINUTES = 30
ARTIFACT_DAYS = 14
KERNEL_ARTIFACT_DAYS = 2  # a kernel artifact only has to outlive its pipeline
GITLAB_NEEDS_LIMIT = 50  # GitLab's default ci_max_needs; past it the report job relies on stage order
CACHE_DIR = "/harness-cache"  # absolute: the harness hands it to make -C, whose cwd is the kernel tree
ARTIFACTS = "artifacts"
INSTALL = "apt-get update -qq && apt-get install -y -qq --no-install-recommends"
GITHUB_OUTPUT = '"$GITHUB_OUTPUT"'  # the step's outputs file, as a shell word
SHA256_VAR = "KERNEL_SHA256"  # the cell job's variable that holds its artifact's sha256, from the build job
# What only a kernel build uses (the trees, Debian's configs, Kbuild's host tools): a cell installs none of it.
BUILD_ONLY = re.compile(r"^(linux-source-.*|linux-config-.*|flex|bison|bc|libssl-dev|dwarves)$")
# What the cache key of a build hashes besides the kernel's name: its fragments and the code that configures it.
BUILD_INPUTS = ("configs/fragments/**", "harness/kernel/**")


def debian_packages() -> list[str]:
    lines = (paths.CONFIGS / "debian-packages.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "["))]  # [set] headers


def cell_packages() -> list[str]:
    return [p for p in debian_packages() if not BUILD_ONLY.match(p)]


@dataclass(frozen=True)
class Kernel:
    """One distinct kernel of the matrix, built by one job."""

    kernel: str
    notifier: str
    fragment: str
    arch: str = HOST

    @property
    def id(self) -> str:
        """As the cell ids begin: 6.12-on, 6.12-on-kasan, 7.3-arm64-on."""
        return kernel_label(self.kernel, self.notifier, self.fragment, self.arch)

    @property
    def job(self) -> str:
        """A job id GitHub accepts ([A-Za-z0-9_-]) and GitLab too."""
        return "build-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.id)

    @property
    def artifact(self) -> str:
        return f"kernel-{self.id}"

    @property
    def file(self) -> str:
        return f"{ARTIFACTS}/{self.artifact}.tar.zst"

    @property
    def dotenv(self) -> str:
        """GitLab: the build job's dotenv report, which hands the artifact's sha256 to the cells."""
        return f"{ARTIFACTS}/{self.artifact}.env"

    def args(self) -> list[str]:
        return kernel_args(self.kernel, self.notifier, self.fragment, self.arch)


def kernel_of(cell: Cell) -> Kernel:
    return Kernel(cell.kernel, cell.notifier, cell.fragment, cell.arch)


def kernels(matrix: Matrix) -> list[Kernel]:
    return list(dict.fromkeys(kernel_of(c) for c in matrix.cells))


def run_dir(matrix: Matrix) -> str:
    return f"results/matrix-{matrix.name}/ci"


def cell_command(matrix: Matrix, cell_variable: str) -> str:
    """The cell's command; `cell_variable` is the shell variable that holds its id ("$CELL"), quoted as it is."""
    return (f"{shlex.join(['.venv/bin/harness', 'matrix', 'run', matrix.name])} --cell \"${cell_variable}\" "
            f"{shlex.join(['--run-dir', run_dir(matrix)])}")


def report_command(matrix: Matrix) -> str:
    """The merged report, and the run as a KCIDB document for a lab that submits to KernelCI (kcidb-submit)."""
    rd = run_dir(matrix)
    return shlex.join([".venv/bin/harness", "report", rd, "--kcidb", f"{rd}/kcidb.json"])


def report_files(matrix: Matrix) -> list[str]:
    rd = run_dir(matrix)
    return [f"{rd}/report.html", f"{rd}/summary.json", f"{rd}/junit.xml", f"{rd}/kcidb.json"]


def pack_command(k: Kernel) -> str:
    return shlex.join([".venv/bin/harness", "kernel", *k.args(), "--pack", k.file])


def sha256_line(k: Kernel, name: str, into: str) -> str:
    """`name=<the artifact's sha256>` appended to `into` (a file the CI reads), from what --pack wrote."""
    checksum = shlex.quote(f"{k.file}.sha256")
    return f'echo "{name}=$(cut -d \' \' -f 1 {checksum})" >> {into}'


def import_command(k: Kernel) -> str:
    return f'{shlex.join([".venv/bin/harness", "kernel", "--import", k.file])} --sha256 "${SHA256_VAR}"'


def job_minutes(cell: Cell) -> int:
    return math.ceil(cell.timeout_s / 60) + CELL_SETUP_MINUTES


def build_minutes(matrix: Matrix) -> int:
    return math.ceil(matrix.build_timeout_s / 60) + BUILD_SETUP_MINUTES


def build_inputs_digest() -> str:
    """The content of BUILD_INPUTS now (GitLab's cache key has no hashFiles: the export computes it)."""
    # "DIR/**" as hashFiles reads it: every file under DIR (pathlib's ** alone would match directories only)
    files = sorted(p for pattern in BUILD_INPUTS for p in (paths.REPO / pattern.removesuffix("/**")).rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts)
    return content_key(*(str(p.relative_to(paths.REPO)).encode() + b"\0" + p.read_bytes() for p in files))[:12]


def header(matrix: Matrix, ci: str) -> str:
    ks = kernels(matrix)
    return (f"# Generated by `harness matrix export {matrix.name} --ci {ci}` from {matrix.path.name}: regenerate it\n"
            f"# rather than edit it. {len(ks)} kernel build jobs, each packing its build as an artifact; "
            f"{len(matrix.cells)} cell jobs,\n# each importing its kernel's artifact (no kernel compile); "
            "then one job that merges their results.\n")


# -- GitHub Actions -----------------------------------------------------------------------------------------

def _github_install(packages: list[str], then: str) -> dict[str, str]:
    return {"name": "install what this job uses", "run": f"{INSTALL} {shlex.join(packages)} >/dev/null\n{then}\n"}


def github(matrix: Matrix) -> dict[str, Any]:
    rd = run_dir(matrix)
    jobs: dict[str, Any] = {}
    cell_jobs = []
    for k in kernels(matrix):
        jobs[k.job] = {
            "name": f"build {k.id}",
            "runs-on": "ubuntu-latest",
            "container": {"image": CONTAINER},
            "timeout-minutes": build_minutes(matrix),
            "outputs": {"sha256": "${{ steps.pack.outputs.sha256 }}"},
            "steps": [
                {"uses": "actions/checkout@v4"},
                _github_install(["make", "ca-certificates"], "make deps"),
                {"name": "ccache", "uses": "actions/cache@v4",
                 "with": {"path": f"{CACHE_DIR}/ccache",
                          "key": f"ccache-{k.id}-${{{{ hashFiles({', '.join(map(repr, BUILD_INPUTS))}) }}}}",
                          "restore-keys": f"ccache-{k.id}-"}},
                {"name": "build and pack the kernel", "id": "pack",
                 "run": f"{pack_command(k)}\n{sha256_line(k, 'sha256', GITHUB_OUTPUT)}\n"},
                {"name": "upload the kernel", "uses": "actions/upload-artifact@v4",
                 "with": {"name": k.artifact, "path": k.file, "if-no-files-found": "error",
                          "retention-days": KERNEL_ARTIFACT_DAYS, "compression-level": 0}},
            ],
        }
        cells = [c for c in matrix.cells if kernel_of(c) == k]
        job_id = "cells-" + k.job.removeprefix("build-")
        cell_jobs.append(job_id)
        jobs[job_id] = {
            "name": "${{ matrix.cell }}",
            "needs": k.job,
            "runs-on": "ubuntu-latest",
            # Hosted Linux runners have /dev/kvm; the harness boots once under KVM and falls back to TCG
            "container": {"image": CONTAINER, "options": "--device /dev/kvm"},
            "timeout-minutes": "${{ matrix.minutes }}",
            "strategy": {"fail-fast": False, "matrix": {"include": [{"cell": c.id, "minutes": job_minutes(c)}
                                                                    for c in cells]}},
            "steps": [
                {"uses": "actions/checkout@v4"},
                _github_install(cell_packages(), "make venv"),
                {"name": "download the kernel", "uses": "actions/download-artifact@v4",
                 "with": {"name": k.artifact, "path": ARTIFACTS}},
                # through the environment: an expression inside `run` would be pasted into the script
                {"name": "import the kernel", "env": {SHA256_VAR: f"${{{{ needs['{k.job}'].outputs.sha256 }}}}"},
                 "run": import_command(k)},
                {"name": "run the cell", "env": {"CELL": "${{ matrix.cell }}"}, "run": cell_command(matrix, "CELL")},
                {"name": "upload the cell's results", "if": "always()", "uses": "actions/upload-artifact@v4",
                 "with": {"name": "cell-${{ matrix.cell }}", "path": f"{rd}/", "if-no-files-found": "error",
                          "retention-days": ARTIFACT_DAYS}},
            ],
        }
    jobs["report"] = {
        "name": "report",
        "needs": cell_jobs,
        "if": "always()",
        "runs-on": "ubuntu-latest",
        "container": {"image": CONTAINER},
        "timeout-minutes": REPORT_MINUTES,
        "steps": [
            {"uses": "actions/checkout@v4"},
            _github_install(["make", "python3-venv"], "make venv"),
            {"name": "download every cell's results", "uses": "actions/download-artifact@v4",
             "with": {"pattern": "cell-*", "path": rd, "merge-multiple": True}},
            {"name": "merged report", "run": f'{report_command(matrix)} | tee -a "$GITHUB_STEP_SUMMARY"'},
            {"name": "upload the report", "if": "always()", "uses": "actions/upload-artifact@v4",
             "with": {"name": f"report-{matrix.name}", "retention-days": ARTIFACT_DAYS,
                      "path": "".join(f"{p}\n" for p in report_files(matrix))}},
        ],
    }
    return {
        "name": f"matrix {matrix.name}",
        "on": {"schedule": [{"cron": "0 2 * * *"}], "workflow_dispatch": None},
        "env": {"HARNESS_CACHE": CACHE_DIR, "DEBIAN_FRONTEND": "noninteractive"},
        "jobs": jobs,
    }


# -- GitLab CI ----------------------------------------------------------------------------------------------

def gitlab(matrix: Matrix) -> dict[str, Any]:
    rd = run_dir(matrix)
    digest = build_inputs_digest()
    config: dict[str, Any] = {
        "stages": ["build", "cells", "report"],
        "default": {"image": CONTAINER},
        "variables": {"HARNESS_CACHE": "$CI_PROJECT_DIR/.harness-cache", "DEBIAN_FRONTEND": "noninteractive"},
        ".cell": {
            "stage": "cells",
            "artifacts": {"when": "always", "expire_in": f"{ARTIFACT_DAYS} days", "paths": [f"{rd}/"],
                          "reports": {"junit": f"{rd}/*/junit.xml"}},
        },
    }
    for k in kernels(matrix):
        config[k.job] = {
            "stage": "build",
            "timeout": f"{build_minutes(matrix)}m",
            "script": [f"{INSTALL} make ca-certificates >/dev/null", "make deps", pack_command(k),
                       sha256_line(k, SHA256_VAR, shlex.quote(k.dotenv))],
            # the kernel, its fragments and the configuring code, as GitHub's hashFiles of BUILD_INPUTS
            "cache": {"key": f"ccache-{k.id}-{digest}", "paths": [".harness-cache/ccache/"]},
            # the sha256 as a dotenv report: the variable of every job that needs this one, with its artifacts
            "artifacts": {"expire_in": f"{KERNEL_ARTIFACT_DAYS} days", "paths": [k.file],
                          "reports": {"dotenv": k.dotenv}},
        }
    for c in matrix.cells:
        k = kernel_of(c)
        config[c.id] = {
            "extends": ".cell",
            "needs": [{"job": k.job, "artifacts": True}],
            "timeout": f"{job_minutes(c)}m",
            "variables": {"CELL": c.id},
            "script": [f"{INSTALL} {shlex.join(cell_packages())} >/dev/null", "make venv", import_command(k),
                       cell_command(matrix, "CELL")],
        }
    report_job: dict[str, Any] = {
        "stage": "report",
        "when": "always",
        "timeout": f"{REPORT_MINUTES}m",
        "script": [f"{INSTALL} make python3-venv >/dev/null", "make venv", report_command(matrix)],
        "artifacts": {"when": "always", "expire_in": f"{ARTIFACT_DAYS} days", "paths": report_files(matrix),
                      "reports": {"junit": f"{rd}/junit.xml"}},
    }
    if len(matrix.cells) <= GITLAB_NEEDS_LIMIT:
        report_job["needs"] = [{"job": c.id, "artifacts": True} for c in matrix.cells]
    else:  # stage order; the cells' artifacts only, not the kernels of the build stage
        report_job["dependencies"] = [c.id for c in matrix.cells]
    config["report"] = report_job
    return config


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (|), as people write them in CI files."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


def export(matrix: Matrix, ci: str) -> str:
    data = {"github": github, "gitlab": gitlab}[ci](matrix)
    return header(matrix, ci) + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000)
