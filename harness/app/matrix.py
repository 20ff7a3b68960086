"""The `matrix` use cases: list a matrix's cells, run them (harness/matrix/runner.py), export a CI configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.matrix import export, runner, spec
from harness.matrix.spec import MatrixError
from harness.results import rundir


@dataclass(frozen=True)
class MatrixListResult:
    matrix: spec.Matrix


def matrix_list(name: str) -> MatrixListResult:
    return MatrixListResult(spec.load(name))


@dataclass(frozen=True)
class MatrixRunRequest:
    name: str  # configs/matrix/NAME.yaml or a path
    cells: tuple[str, ...] = ()  # ids; none: every cell
    jobs: int | None = None  # cells at once; None: runner.default_jobs()
    run_dir: Path | None = None  # default: results/matrix-NAME/<time>


@dataclass(frozen=True)
class MatrixRunResult:
    exit_code: int  # 0 every cell green (or FLAKY), 1 otherwise, 130 interrupted
    run_dir: Path


def matrix_run(req: MatrixRunRequest) -> MatrixRunResult:
    m = spec.load(req.name)
    cells = m.select(list(req.cells))
    if req.jobs is not None and req.jobs < 1:
        raise MatrixError(f"--jobs must be at least 1, got {req.jobs}")
    run_dir = rundir.new_run_dir(req.run_dir, store=runner.store(m.name))
    return MatrixRunResult(runner.Runner(m, cells, run_dir, req.jobs or runner.default_jobs()).run(), run_dir)


@dataclass(frozen=True)
class MatrixExportRequest:
    name: str
    ci: str  # github | gitlab
    output: Path | None = None  # None: the text is the result's alone


def matrix_export(req: MatrixExportRequest) -> str:
    """The CI configuration; written to `output` when given."""
    text = export.export(spec.load(req.name), req.ci)
    if req.output:
        req.output.parent.mkdir(parents=True, exist_ok=True)
        req.output.write_text(text)
    return text


def default_jobs() -> int:
    return runner.default_jobs()
