"""The CLI over the application layer (harness/app/): each command parses its arguments into its use case's
request and calls that one function; every command's --help lists its exit statuses; failures map to exit
statuses once (harness/app/failures.py), and `harness --record` writes how a command ended. No guest needed."""

from __future__ import annotations

import argparse
import errno
import json
import types
from pathlib import Path
from typing import Any

import pytest

from harness.app import shell as shell_app
from harness.app.bench import BenchRequest, SoakRequest
from harness.app.compare import CompareRequest
from harness.app.config import ConfigDiffRequest, ConfigExplainRequest, ConfigMakeRequest
from harness.app.driver import DriverRequest
from harness.app.evidence import EvidenceRequest
from harness.app.kernel import KernelChoice, KernelRequest
from harness.app.matrix import MatrixExportRequest, MatrixRunRequest
from harness.app.report import ReportRequest
from harness.app.run import RunRequest
from harness.app.shell import ShellRequest
from harness.app.trace import TraceRequest
from harness.cli import main as cli_main
from harness.errors import EXIT_INFRA, EXIT_INTERRUPTED, EXIT_USER, UserError
from harness.kernel.build import DiskFull
from harness.kernel.debian import AptFailed
from harness.results.model import ExitRecord
from harness.results.outcome import GuestUnreachable
from harness.vm.machine import QemuMissing
from harness.vm.ssh import CommandResult


class Called(Exception):
    """Raised by a stand-in use case: the request it got is in .request."""

    def __init__(self, request: object):
        super().__init__("called")
        self.request = request


# (argv, the module and name of the app function the command calls, the request it must get)
CASES: list[tuple[list[str], str, str, object]] = [
    (["run", "--kernel-src", "/src/linux", "--notifier", "off", "--fragment", "debug/kasan", "--machine", "numa2",
      "--results-dir", "/r", "-k", "munmap", "--boot-timeout", "30", "--guest-modules", "fault_panic", "-j", "2",
      "--ktap", "suites/test_events.py"],
     "harness.cli.run", "run",
     RunRequest(KernelChoice("/src/linux", "off", ("debug/kasan",)), "numa2", ("suites/test_events.py",), Path("/r"),
                "munmap", 30.0, "fault_panic", quiet=True, jobs=2)),
    (["compare", "--base", "debian:7.3", "--base-patch", "fix.patch", "--patch", "a.patch", "--patch", "b.patch",
      "--notifier", "off", "--fragment", "f", "--machine", "m", "--driver", "kvm", "--expect-events", "e.yaml",
      "--results-dir", "/r", "-k", "x", "suites/test_events.py"],
     "harness.cli.compare", "run_compare",
     CompareRequest("debian:7.3", ("fix.patch",), ("a.patch", "b.patch"), None, "off", ("f",), "m", ("kvm",),
                    ("suites/test_events.py",), Path("e.yaml"), Path("/r"), "x")),
    (["driver", "test_hmm", "--kernel-src", "debian:6.1", "--suite", "s.py", "-k", "y"],
     "harness.cli.driver", "driver",
     DriverRequest("test_hmm", KernelChoice("debian:6.1"), None, "y", None, "", ("s.py",))),
    (["kernel", "--notifier", "off", "--set", "KASAN=y", "--pack", "out.tar.zst"],
     "harness.cli.kernel", "kernel",
     KernelRequest(KernelChoice(None, "off"), ("KASAN=y",), Path("out.tar.zst"))),
    (["kernel", "--import", "a.tar.zst"], "harness.cli.kernel", "kernel",
     KernelRequest(KernelChoice(), (), None, Path("a.tar.zst"))),
    (["shell", "-c", "uname -r", "--timeout", "5", "--machine", "kvm"], "harness.cli.shell", "shell",
     ShellRequest(KernelChoice(), "kvm", "uname -r", 5.0)),
    (["trace", "--json", "--timeout", "9", "/bin/true", "--", "a", "b"], "harness.cli.trace", "trace",
     TraceRequest(Path("/bin/true"), ("a", "b"), None, "default", 9.0)),
    (["evidence", "--repeats", "2", "--only", "mprotect-ro", "--no-hmm", "--rxe"], "harness.cli.evidence", "evidence",
     EvidenceRequest(None, "default", None, 2, ("mprotect-ro",), False, True)),
    (["bench", "--boots", "5", "--loop"], "harness.cli.bench", "bench", BenchRequest(None, "default", None, 5, True)),
    (["soak", "--runs", "4", "--fault-rate", "0.5", "--seed", "7"], "harness.cli.bench", "soak",
     SoakRequest(None, "default", None, 4, 0.5, 7)),
    (["config", "make", "--base", "defconfig", "--fragment", "f.config", "--set", "A=y", "--on", "B", "--off", "C",
      "-o", "out"], "harness.cli.config", "config_make",
     ConfigMakeRequest(Path("out"), None, "defconfig", (Path("f.config"),), ("A=y",), ("B",), ("C",))),
    (["config", "explain", "MMU_NOTIFIER", "--config", "c"], "harness.cli.config", "config_explain",
     ConfigExplainRequest("MMU_NOTIFIER", None, Path("c"))),
    (["config", "diff", "a", "b"], "harness.cli.config", "config_diff", ConfigDiffRequest(Path("a"), Path("b"))),
    (["matrix", "run", "smoke", "--cell", "c1", "--jobs", "3", "--run-dir", "/r"], "harness.cli.matrix",
     "matrix_run", MatrixRunRequest("smoke", ("c1",), 3, Path("/r"))),
    (["matrix", "export", "smoke", "--ci", "gitlab", "-o", "ci.yml"], "harness.cli.matrix", "matrix_export",
     MatrixExportRequest("smoke", "gitlab", Path("ci.yml"))),
    (["report", "/r", "--compare", "--kcidb", "k.json", "--kcidb-url", "https://x"], "harness.cli.report",
     "write_report", ReportRequest(Path("/r"), "previous", Path("k.json"), "https://x")),
]


@pytest.mark.parametrize(("argv", "module", "name", "expected"), CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_each_command_parses_into_its_request_and_calls_one_use_case(argv: list[str], module: str, name: str,
                                                                     expected: object,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("KSRC", raising=False)
    monkeypatch.delenv("MACHINE", raising=False)

    def stand_in(request: object) -> None:
        raise Called(request)

    monkeypatch.setattr(f"{module}.{name}", stand_in)
    with pytest.raises(Called) as called:
        cli_main.main(argv)
    assert called.value.request == expected


def _parsers(p: argparse.ArgumentParser, path: str = "harness") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, p)]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_command_lists_its_exit_statuses_in_its_help():
    parsers = _parsers(cli_main.parser())
    assert len(parsers) >= 18  # harness, its 12 commands, config's and matrix's sub-commands
    for path, p in parsers:
        text = p.format_help()
        assert "exit status:" in text, path
        epilog = text[text.index("exit status:"):]
        for code in (EXIT_USER, EXIT_INFRA, EXIT_INTERRUPTED):
            assert f"  {code}  " in epilog, (path, code, epilog)
        assert epilog.count("\n") >= 4, (path, epilog)  # its own statuses as well as the common ones


def test_the_compare_help_names_its_changed_status():
    (compare,) = [p for path, p in _parsers(cli_main.parser()) if path == "harness compare"]
    assert "     3  only notifier events changed" in compare.format_help()


def test_the_trace_help_says_what_programs_it_takes():
    text = cli_main.parser().format_help()
    line = next(line for line in text.splitlines() if line.strip().startswith("trace"))
    assert "static" not in line or "dynamic" in line, line


def _failing_prepare(error: BaseException) -> Any:
    def prepare(*args: object, **kwargs: object) -> None:
        raise error
    return prepare


@pytest.mark.parametrize(("error", "status", "kind"), [
    (AptFailed("apt-get update of trixie-backports failed (exit 100): Could not resolve host"), EXIT_INFRA, "infra"),
    (QemuMissing("qemu-system-x86_64 not found: apt-get install qemu-system-x86"), EXIT_INFRA, "infra"),
    (DiskFull("make failed: the disk is full"), EXIT_INFRA, "infra"),
    (OSError(errno.ENOSPC, "No space left on device", "/cache/x"), EXIT_INFRA, "infra"),
    (UserError("unknown fragment nope"), EXIT_USER, "user"),
    (GuestUnreachable("guest stopped answering"), EXIT_USER, "fault"),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
], ids=["apt", "qemu", "disk-full-build", "enospc", "user", "fault", "interrupted"])
def test_a_failure_exits_with_its_status_once_and_is_recorded(error: BaseException, status: int, kind: str,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr("harness.app.kernel.prepare", _failing_prepare(error))
    record = tmp_path / "exit.json"
    assert cli_main.main(["--record", str(record), "kernel"]) == status
    err = capsys.readouterr().err
    assert err.startswith("harness: ") and err.count("harness: ") == 1 and "Traceback" not in err, err
    assert ExitRecord.read(record) == ExitRecord("kernel", status, kind, err.removeprefix("harness: ").strip())


def test_a_bug_is_a_traceback_not_a_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr("harness.app.kernel.prepare", _failing_prepare(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli_main.main(["--record", str(tmp_path / "exit.json"), "kernel"])


def test_a_verdict_is_recorded_without_a_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def compared(request: object) -> object:
        return types.SimpleNamespace(text="REPORT\n", out_dir=tmp_path, exit_code=3)

    monkeypatch.setattr("harness.cli.compare.run_compare", compared)
    assert cli_main.main(["--record", str(tmp_path / "exit.json"), "compare", "--patch", "x.patch"]) == 3
    assert json.loads((tmp_path / "exit.json").read_text()) == {"command": "compare", "exit_status": 3, "kind": "",
                                                                "message": ""}


# -- `harness shell -c`: a command killed by a signal, against a session cut without a status --------------

class FakeSSH:
    def __init__(self, result: CommandResult):
        self.result = result

    def run(self, argv: list[str], timeout: float = 60, check: bool = False) -> CommandResult:
        return self.result


class FakeVM:
    result: CommandResult

    def __init__(self, *args: object, **kwargs: object):
        self.ssh = FakeSSH(self.result)
        self.console, self.console_log, self.release, self.boot_s = None, Path("console.log"), "6.12", 1.0

    def start(self, boot_timeout: float) -> None:
        pass

    def stop(self) -> None:
        pass


def _shell_with(result: CommandResult, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> shell_app.ShellResult:
    build = types.SimpleNamespace(kernel_image=tmp_path / "bzImage", has=lambda opt: True)
    prepared = types.SimpleNamespace(build=build, image=types.SimpleNamespace())
    monkeypatch.setattr(shell_app, "prepare", lambda *a, **k: prepared)
    monkeypatch.setattr(shell_app, "load_profile", lambda name, arch: name)
    monkeypatch.setattr(shell_app, "check_devices", lambda profile: None)
    monkeypatch.setattr(shell_app, "accel_for", lambda *a: "tcg")
    monkeypatch.setattr(shell_app.rundir, "new_run_dir", lambda *a: tmp_path)
    FakeVM.result = result
    monkeypatch.setattr(shell_app, "guest_vm", FakeVM)
    return shell_app.shell(ShellRequest(command="sleep 100"))


def test_shell_reports_a_killed_command_as_a_shell_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    killed = CommandResult(("sh", "-c", "sleep 100"), -1, "", "", 0.5, signal=9)
    assert _shell_with(killed, monkeypatch, tmp_path).exit_status == 128 + 9


def test_shell_reports_a_session_cut_without_a_status_as_a_fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    cut = CommandResult(("sh", "-c", "sleep 100"), -1, "", "", 0.5)
    with pytest.raises(GuestUnreachable, match="ended without an exit status"):
        _shell_with(cut, monkeypatch, tmp_path)


def test_shell_gives_back_the_commands_status_and_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    ran = CommandResult(("sh", "-c", "x"), 3, "out\n", "err\n", 0.5)
    assert _shell_with(ran, monkeypatch, tmp_path) == shell_app.ShellResult(3, "out\n", "err\n")
