"""`harness fuzz`'s pure parts: the program text, generation and mutation, the shrinker, the host's oracle,
and configs/fuzz.yaml against configs/expectations/events.yaml. tests/test_fuzz_e2e.py runs real kernels.
(Not test_fuzz.py: pytest imports test files by basename, and suites/test_fuzz.py has that one.)"""

from __future__ import annotations

import json
import random
import subprocess

import pytest

from harness import paths
from harness.checks import expectations
from harness.fuzz import oracle, program
from harness.fuzz.program import Features, Generator, Op, ProgramError, parse, render
from harness.fuzz.shrink import shrink
from harness.results.events import Event

CONFIG = program.load_config()


# --- the program text ------------------------------------------------------------------------------

def test_a_program_reads_back_as_it_was_written():
    text = "map 0 anon 16\nwrite 0 0 16\nadvise 0 2 4 dontneed\nremap 0 dontunmap 0\nreap\n"
    assert render(parse(text)) == text
    assert parse(text)[2] == Op("advise", (0, 2, 4, "dontneed"))
    assert parse(text)[2].kind() == "advise dontneed"


@pytest.mark.parametrize("text, says", [
    ("mmap 0 anon 1", "unknown operation 'mmap'"),
    ("map 0 anon", "map takes 3 word(s)"),
    ("map 9 anon 1", "slot 9 is not 0..7"),
    ("map 0 huge 1", "'huge' is not one of anon"),
    ("map 0 anon 513", "513 pages is not 1..512"),
    ("unmap 0 -1 2", "'-1' is not a small non-negative integer"),
    ("write 0 0 1\nreap now", "p:2: reap takes 0 word(s)"),
])
def test_a_malformed_program_is_refused_with_its_line(text, says):
    with pytest.raises(ProgramError) as e:
        parse(text, "p")
    assert says in str(e.value)


def test_a_seed_gives_the_same_programs_and_another_seed_others():
    gen = Generator(CONFIG, Features())
    first = [gen.program(random.Random(f"7:{k}")) for k in range(20)]
    again = [gen.program(random.Random(f"7:{k}")) for k in range(20)]
    other = [gen.program(random.Random(f"8:{k}")) for k in range(20)]
    assert first == again
    assert first != other


def test_generated_and_mutated_programs_are_valid_text_and_follow_the_grammar():
    gen = Generator(CONFIG, Features(hmm=False, file=False))
    rng = random.Random(1)
    programs = [gen.program(rng) for _ in range(200)]
    for _ in range(200):
        programs.append(gen.mutate(rng, rng.choice(programs), rng.choice(programs)))
    for p in programs:
        assert parse(render(p)) == p
    generated = programs[:200]
    for p in generated:
        assert p[0].name == "map"  # nothing before the first area
        assert CONFIG.min_ops <= len(p) <= CONFIG.max_ops
        assert not any(op.name.startswith("dev_") for op in p)  # no test_hmm here
        assert not any(op.name == "map" and op.args[1] == "file" for op in p)  # no ext2 here
        assert not any(op.name == "bg" and op.args[3] == "devread" for op in p)
    names = {op.name for p in generated for op in p}
    assert names >= {"map", "unmap", "protect", "remap", "write", "advise", "fork", "mirror"}


def test_an_operation_gets_smaller_towards_one_page_at_the_start():
    assert Op("unmap", (0, 5, 8)).text() == "unmap 0 5 8"
    smaller = {op.text() for op in program.simpler(Op("unmap", (0, 5, 8)))}
    assert smaller == {"unmap 0 0 8", "unmap 0 5 1", "unmap 0 5 4"}
    assert program.simpler(Op("map", (0, "thp", 512))) == []  # a huge page is 512 pages or none
    assert program.simpler(Op("reap")) == []


# --- the shrinker ----------------------------------------------------------------------------------

def test_the_shrinker_keeps_what_the_failure_needs_and_drops_the_rest():
    gen = Generator(CONFIG, Features())
    noise = gen.program(random.Random(3))
    needed = (Op("map", (5, "anon", 64)), Op("advise", (5, 3, 16, "dontneed")))
    big = (*noise[:10], needed[0], *noise[10:20], needed[1], *noise[20:])
    calls = []

    def fails(p):  # the "bug": an advise dontneed on slot 5 after slot 5 was mapped
        calls.append(p)
        mapped = [i for i, op in enumerate(p) if op.name == "map" and op.args[0] == 5]
        return any(op.name == "advise" and op.args[0] == 5 and op.args[3] == "dontneed" and mapped and i > mapped[0]
                   for i, op in enumerate(p))

    result = shrink(big, fails, budget=500)
    assert result.complete
    assert [op.name for op in result.program] == ["map", "advise"]
    assert result.program[1] == Op("advise", (5, 0, 1, "dontneed"))  # and as small as it gets
    assert result.runs == len(calls) < 120


def test_the_shrinker_stops_at_its_budget():
    result = shrink(tuple(Op("reap") for _ in range(64)), lambda p: len(p) > 3, budget=5)
    assert result.runs == 5 and not result.complete
    assert 3 < len(result.program) < 64


# --- the oracle --------------------------------------------------------------------------------------

PID, PAGE, START = 100, 4096, 0x200000000000  # slot 0's window (fuzz_exec.c)


def _line(i, op, must, seq0, seq1, ret=0, **kw):
    return json.dumps({"i": i, "op": op, "slot": 0, "start": START, "end": START + 4 * PAGE, "ret": ret,
                       "errno": 0, "seq0": seq0, "seq1": seq1, "must": must, **kw})


def _out(*lines):
    header = json.dumps({"pid": PID, "page_size": PAGE, "probed": 1, "hmm": 1, "model": 1, "cpus": 2})
    return oracle.parse_output("\n".join([header, *lines, '{"done":2}']) + "\n")


def _start(seq, event, start, end, cpid=PID):
    return Event(seq=seq, pid=PID, cpid=cpid, kind="start", event=event, start=start, end=end)


PROG = parse("map 0 anon 4\nunmap 0 0 4\n")


def test_an_operation_whose_pages_were_all_invalidated_with_its_event_is_clean():
    out = _out(_line(0, "map", [], 0, 0), _line(1, "unmap", [0, 1, 3], 0, 2))
    judged = oracle.judge(PROG, out, [_start(0, "UNMAP", START, START + 4 * PAGE)], "", CONFIG)
    assert judged.finding is None
    assert judged.events[1] == [("UNMAP", 0, 4 * PAGE)]


def test_a_present_page_left_out_of_the_invalidation_is_a_completeness_finding():
    out = _out(_line(0, "map", [], 0, 0), _line(1, "unmap", [0, 3], 0, 2))
    judged = oracle.judge(PROG, out, [_start(0, "UNMAP", START, START + 3 * PAGE)], "", CONFIG)
    f = judged.finding
    assert f and f.check == "completeness" and f.op == 1 and f.op_text == "unmap 0 0 4"
    assert "+3 from" in f.detail and "expected UNMAP (mm/memory.c:unmap_vmas)" in f.detail
    assert f.signature == "completeness:unmap"


def test_an_invalidation_outside_the_operations_window_does_not_count():
    out = _out(_line(0, "map", [], 0, 0), _line(1, "unmap", [0], 5, 7))
    judged = oracle.judge(PROG, out, [_start(4, "UNMAP", START, START + 4 * PAGE)], "", CONFIG)
    assert judged.finding and judged.finding.check == "completeness"


def test_the_wrong_event_over_the_pages_is_an_event_finding():
    out = _out(_line(0, "map", [], 0, 0), _line(1, "unmap", [0, 1], 0, 2))
    judged = oracle.judge(PROG, out, [_start(0, "PROTECTION_VMA", START, START + 4 * PAGE)], "", CONFIG)
    assert judged.finding and judged.finding.check == "event"
    assert "['PROTECTION_VMA'], not UNMAP" in judged.finding.detail


def test_an_operation_that_failed_or_that_the_ring_dropped_is_not_judged():
    out = _out(_line(0, "map", [], 0, 0), _line(1, "unmap", [0], 0, 2, ret=-1))
    assert oracle.judge(PROG, out, [], "", CONFIG).finding is None
    out = _out(_line(0, "map", [], 0, 0), _line(1, "unmap", [0], 3, 9))
    judged = oracle.judge(PROG, out, [_start(5, "CLEAR", 0, 1)], "", CONFIG)
    assert judged.finding is None and "dropped its events" in judged.notes[0]


def test_the_executors_finding_comes_first_and_names_the_operation():
    finding = json.dumps({"finding": "device", "i": 1, "detail": "slot 0 page 2: the device reads 0x01"})
    out = _out(_line(0, "map", [], 0, 0), finding)
    judged = oracle.judge(PROG, out, [], "[ 1.0] WARNING: CPU: 0 PID: 1 at mm/x.c:1 f+0x1/0x2\n", CONFIG)
    assert judged.finding and judged.finding.check == "device" and judged.finding.op_text == "unmap 0 0 4"
    assert judged.finding.signature == "device:unmap"


def test_a_kernel_splat_is_a_finding_when_the_executor_saw_nothing():
    text = next((paths.REPO / "tests/data/splats/6.12").glob("*warn*")).read_text()
    judged = oracle.judge(PROG, _out(_line(0, "map", [], 0, 0)), [], text, CONFIG)
    assert judged.finding and judged.finding.check == "splat"
    assert judged.finding.signature == f"splat:{judged.finding.title}"


def test_a_line_that_is_not_the_protocol_is_the_harness_bug_it_is():
    with pytest.raises(oracle.ExecutorError):
        oracle.parse_output('{"pid": 1}\nSegmentation fault\n{"done": 0}\n')
    cut = oracle.parse_output('{"pid": 1}\n{"i": 0, "op": "map"')  # a hang cut the last line
    assert "cut short" in cut.notes[0]


# --- configs/fuzz.yaml -------------------------------------------------------------------------------

@pytest.mark.parametrize("series", ["6.12", "7.3"])
def test_each_required_event_is_the_one_events_yaml_expects_of_the_same_operation(series):
    cases = expectations.load(series)
    for op, spec in CONFIG.events.items():
        case = cases[spec["case"]]
        assert spec["event"] in {e.event for e in case.expect}, (op, spec, case.expect)


def test_every_operation_of_the_executor_is_known_to_the_generator():
    source = (paths.GUEST / "kprograms/fuzz_exec.c").read_text()
    for name in program.SIGNATURES:
        assert f'"{name}"' in source or name == "map", name
    assert set(CONFIG.weights) == set(program.SIGNATURES)


def test_the_executor_and_the_generator_agree_on_their_limits():
    source = (paths.GUEST / "kprograms/fuzz_exec.c").read_text()
    assert f"#define WINDOW_BASE {program.WINDOWS[0]:#x}UL\n" in source
    assert "#define WINDOW_SIZE (1UL << 30)\n" in source
    assert f"#define NSLOTS {program.NSLOTS}\n" in source
    assert f"#define MAX_PAGES {program.MAX_PAGES}\n" in source


def test_the_executor_builds_on_this_host_without_a_kernel_tree(tmp_path):
    """A syntax check of fuzz_exec.c against a stand-in test_hmm_uapi.h (the real build is the kernel's)."""
    (tmp_path / "lib").mkdir()
    uapi = paths.REPO / "tests/data/fuzz/test_hmm_uapi.h"  # lib/test_hmm_uapi.h of Debian's 6.12, as it is
    (tmp_path / "lib/test_hmm_uapi.h").write_text(uapi.read_text())
    proc = subprocess.run(["gcc", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-I", str(tmp_path),
                           str(paths.GUEST / "kprograms/fuzz_exec.c")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_reproducer_is_one_c_file_that_runs_its_program(tmp_path):
    """report.reproducer(): fuzz_exec.c with probe.h inlined and the program built in; here it runs on the host,
    where there is neither probe nor test_hmm, so it only shows that the built-in program is the one run."""
    from types import SimpleNamespace

    from harness.fuzz import report
    from harness.fuzz.campaign import Found
    from harness.kernel.arch import load_arch

    prog = parse("map 0 anon 3\nwrite 0 0 3\nprotect 0 1 1 r\nunmap 0 0 1\n")
    finding = oracle.Finding("completeness", 3, "1 page(s) present before it were not invalidated", "unmap 0 0 1")
    found = Found(finding, "7", 12, prog, prog, oracle.Outcome(), 3, 1.5)
    source = report.reproducer(found, SimpleNamespace(build=SimpleNamespace(release="6.12.118", arch=load_arch())))
    assert " *   gcc -O2 -static " in source  # the build line names the architecture's compiler
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/test_hmm_uapi.h").write_text((paths.REPO / "tests/data/fuzz/test_hmm_uapi.h").read_text())
    (tmp_path / "reproducer.c").write_text(source)
    cc = subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-static", "-I", str(tmp_path),
                         "-o", str(tmp_path / "reproducer"), str(tmp_path / "reproducer.c")],
                        capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    run = subprocess.run([str(tmp_path / "reproducer")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line.get("op") for line in lines[1:-1]] == ["map", "write", "protect", "unmap"]
    assert lines[-1] == {"done": 4}


def test_only_what_an_operation_did_to_the_areas_is_compared():
    """The executor's own faults (its stack, its data after a fork) are in the window too, elsewhere."""
    out = _out(_line(0, "map", [], 0, 0), _line(1, "unmap", [0], 0, 3))
    events = [_start(0, "CLEAR", 0x7FFF0000, 0x7FFF1000), _start(1, "UNMAP", START, START + PAGE),
              _start(2, "CLEAR", START, START + PAGE, cpid=PID + 1)]  # ksmd's, say
    assert oracle.judge(PROG, out, events, "", CONFIG).events[1] == [("UNMAP", 0, PAGE)]


def test_kcov_pcs_are_a_behaviour_each():
    from harness.fuzz.campaign import behaviours
    from harness.fuzz.runner import Run

    out = oracle.parse_output('{"pid": 1, "page_size": 4096}\n{"pcs":"ffffffff81001000,ffffffff81001010"}\n'
                              '{"done": 0}\n')
    assert out.pcs == {0xFFFFFFFF81001000, 0xFFFFFFFF81001010} and out.done
    assert behaviours(Run((), out, 0.0)) == {"pc:ffffffff81001000", "pc:ffffffff81001010"}
    with pytest.raises(oracle.ExecutorError):
        oracle.parse_output('{"pcs":"zz"}\n')


def test_a_replayed_program_is_read_with_care(tmp_path):
    from harness.app.fuzz import PROGRAM_MAX_BYTES, read_program
    from harness.errors import UserError

    with pytest.raises(UserError, match="no such file"):
        read_program(tmp_path / "missing.prog")
    big = tmp_path / "big.prog"
    big.write_text("reap\n" * (PROGRAM_MAX_BYTES // 5 + 1))
    with pytest.raises(UserError, match="not a program"):
        read_program(big)
    bad = tmp_path / "bad.prog"
    bad.write_bytes(b"map 0 anon 4\n\xff\xfe rm -rf /\n")
    with pytest.raises(ProgramError, match=r"bad\.prog:2: unknown operation"):
        read_program(bad)


class _FindsInOrder:
    """A stand-in guest (Campaign only calls run()): program k finds what `findings[k]` says, and a shrink's
    candidate finds the same as the program it came from only when it is that program."""
    boots = 0

    def __init__(self, findings: list[oracle.Finding | None]):
        self.findings, self.calls = findings, 0

    def run(self, prog):
        from harness.fuzz.runner import Run
        finding = self.findings[self.calls] if self.calls < len(self.findings) else None
        self.calls += 1
        return Run(prog, oracle.Outcome(finding=finding, done=True), 0.01)


@pytest.mark.parametrize("stop_checks, programs", [(frozenset(), 2), (frozenset({"completeness"}), 4)])
def test_a_campaign_stops_at_the_first_finding_of_the_checks_it_was_given(tmp_path, monkeypatch, stop_checks,
                                                                          programs):
    from harness.fuzz.campaign import Campaign, Corpus
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))  # the corpus lives in the cache
    crash = oracle.Finding("crash", None, "kernel crashed", title="kernel BUG in migration_entry_wait_on_locked")
    planted = oracle.Finding("completeness", 2, "page 3 still mapped", op_text="remap 1 move 4")
    # program 0 clean, 1 crashes (its shrink: one run that does not reproduce), 2 clean, 3 the planted bug
    guest = _FindsInOrder([None, crash, None, None, planted, None])
    found = []
    campaign = Campaign([guest], Generator(CONFIG, Features()), Corpus.open("1", False), "1", found.append,
                        shrink_budget=1)
    stats = campaign.run(60, max_programs=10, stop_at_first=True, stop_checks=stop_checks)
    assert stats.programs == programs
    assert [f.finding.check for f in found] == ["crash", "completeness"][:1 if not stop_checks else 2]
