"""The application layer: one function per use case, between the CLI and the pipeline's stages.

Each takes a typed request and returns a typed result; harness/cli/ only parses arguments into the
request, calls one of these, and prints the result. Commands reach each other only through here (compare
runs `run_on`; evidence runs `run_compare`; the loop bench runs `run` and `run_compare`).

    kernel.kernel(KernelRequest) -> KernelResult                  build/find, --pack, --import
    run.run(RunRequest) -> RunResult                              prepare once, then pytest in-process
    run.run_on(RunRequest, Prepared) -> RunResult                 the same on a kernel prepared already
    compare.run_compare(CompareRequest) -> CompareResult          a tree against the tree plus a series
    driver.driver(DriverRequest) -> DriverResult                  one driver profile's suites, a verdict
    driver.list_drivers() -> DriverListing
    evidence.evidence(EvidenceRequest) -> EvidenceResult          what the event field saves a driver
    bench.bench(BenchRequest) -> BenchResult                      bench.json (with loop: the edit-to-verdict loop)
    bench.soak(SoakRequest) -> SoakResult                         soak.json: flakes and injected faults
    trace.trace(TraceRequest) -> TraceResult                      a program's notifier events in a guest
    shell.shell(ShellRequest) -> ShellResult                      a shell, or one command, in a guest
    config.config_make(ConfigMakeRequest) -> ConfigMakeResult     compose a .config
    config.config_explain(ConfigExplainRequest) -> str            why a symbol has its value
    config.config_diff(ConfigDiffRequest) -> str                  two .configs' differences
    matrix.matrix_list(name) -> MatrixListResult
    matrix.matrix_run(MatrixRunRequest) -> MatrixRunResult        cells in parallel processes, records back
    matrix.matrix_export(MatrixExportRequest) -> str              a GitHub/GitLab CI configuration
    report.write_report(ReportRequest) -> ReportResult            report.html, summary.json, KCIDB, a comparison
    failures.failure_of(exception) -> Failure | None              the one exception -> exit status mapping

Errors: bad input raises a harness.errors.UserError, a failing machine an InfraError, a fault of a guest a
HarnessFault; none is caught here (harness/cli/main.py maps them once, through failures.py).
"""
