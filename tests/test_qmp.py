from pathlib import Path

from harness.vm.qmp import SymbolMap, instruction_pointers

SYSTEM_MAP = """\
ffffffff81000000 T _text
ffffffff813ab61d T delay_tsc
ffffffff813ab6a0 t delay_halt
ffffffff813af8bc T default_idle
ffffffff813af8bc T __cpuidle_text_start
ffffffff81e00000 D some_data
"""

REGISTERS = """\r
CPU#0\r
RAX=0000000000000000 RBX=ffffffff81809100 RCX=0000000000000000 RDX=0000000000000000\r
RIP=ffffffff813ab64d RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r
CPU#1\r
RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000\r
RIP=00000000004011a0 RFL=00000246 [---Z-P-] CPL=3 II=0 A20=1 SMM=0 HLT=0\r
"""


def test_each_cpu_is_named_by_the_text_symbol_below_its_rip(tmp_path: Path):
    system_map = tmp_path / "System.map"
    system_map.write_text(SYSTEM_MAP)
    symbols = SymbolMap(system_map)
    rips = instruction_pointers(REGISTERS)
    assert rips == {"CPU#0": 0xFFFFFFFF813AB64D, "CPU#1": 0x4011A0}
    assert symbols.name(rips["CPU#0"]) == "delay_tsc+0x30"
    assert symbols.name(rips["CPU#1"]) == "user space"
    assert symbols.name(0xFFFFFFFF813AF8BC) in ("default_idle+0x0", "__cpuidle_text_start+0x0")
