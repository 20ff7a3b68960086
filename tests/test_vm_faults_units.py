"""The words of harness/vm/faults.py and trace's static check, without a guest (e2e: test_command_faults.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.app.trace import elf_interpreter, shared_libraries
from harness.errors import UserError
from harness.results.splat import find_splats
from harness.vm.faults import dead, qemu_end


def test_how_qemu_ended_is_said_with_the_signal_name():
    assert qemu_end(-9) == "QEMU died (killed by SIGKILL)"
    assert qemu_end(-15) == "QEMU died (killed by SIGTERM)"
    assert qemu_end(1) == "QEMU died (exit status 1)"
    assert qemu_end(-200) == "QEMU died (killed by signal 200)"


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_a_dynamic_program_names_its_interpreter_and_a_static_one_none(tmp_path: Path):
    source = tmp_path / "p.c"
    source.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-o", str(tmp_path / "dyn"), str(source)], check=True)
    subprocess.run(["gcc", "-static", "-o", str(tmp_path / "static"), str(source)], check=True)
    assert elf_interpreter(tmp_path / "dyn").startswith("/lib")
    assert elf_interpreter(tmp_path / "static") == ""
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert elf_interpreter(script) == ""  # not ELF: the guest says what it makes of it


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_a_program_with_a_foreign_loader_is_refused_without_running_it(tmp_path: Path):
    source = tmp_path / "p.c"
    source.write_text("int main(void) { return 0; }\n")
    prog = tmp_path / "foreign"
    subprocess.run(["gcc", "-Wl,--dynamic-linker=/opt/evil/ld.so", "-o", str(prog), str(source)], check=True)
    assert elf_interpreter(prog) == "/opt/evil/ld.so"
    with pytest.raises(UserError, match=r"interpreter /opt/evil/ld\.so, which this host does not have as its loader"):
        shared_libraries(prog, "/opt/evil/ld.so")
    found = dict(shared_libraries(Path("/bin/ls"), elf_interpreter(Path("/bin/ls"))))
    assert "/lib64/ld-linux-x86-64.so.2" in found and any(p.endswith("/libc.so.6") for p in found)


class _EndedConsole:
    """What dead() reads of a console whose QEMU has exited, after what the guest printed."""

    def __init__(self, text: str):
        self.splats, self.flooded, self.exit_status = find_splats(text), "", 0
        self.child = type("Child", (), {"isalive": staticmethod(lambda: False)})()

    def fatal_splat(self):
        return None

    def wait_exit(self, timeout: float) -> None:
        pass


def test_a_qemu_that_ended_after_an_oops_names_the_oops(tmp_path: Path):
    # The shape of a real one (7.3.4 L1, nested KVM, mmu_stress_test): an oops, no panic, then QEMU exited 0
    oops = (Path(__file__).parent / "data/splats/7.3/oops_null_deref.log").read_text()
    vm = type("VM", (), {"console": _EndedConsole(oops), "console_log": tmp_path / "console.log"})()
    fault = dead(vm, "mmu_stress_test ran")
    assert str(fault).startswith("QEMU died (exit status 0) after BUG: kernel NULL pointer dereference in oops_write "
                                 "on the console while mmu_stress_test ran"), fault
    vm.console = _EndedConsole("[    1.0] nothing wrong\n")
    assert str(dead(vm)).splitlines()[0] == "QEMU died (exit status 0)"
