"""The evidence model: what the event field of struct mmu_notifier_range saves a driver, measured.

The probe's model driver (guest/probe/mmu_probe.c, "mirror") mirrors a range of a process the way a
device (RDMA, GPU) would, in one of two modes: blind (every invalidation tears the mirror down and
frees its per-range tracking) or context (the event decides: see docs/evidence.md). The workloads of
guest/programs/ev_mirror.c run in both modes, a few times each, on the notifier-on kernel; the
report under results/<run>/evidence/ compares invalidations received and acted on, re-faults, the
tracking re-allocations, and the time of the timed device-access loop (TCG: a spread, not a figure).

Where the kernel has CONFIG_TEST_HMM, the same workloads also run against a real in-tree mirror,
lib/test_hmm.c's /dev/hmm_dmirror0 (guest/kprograms/ev_hmm.c, built against the tree): its device fault
count is what a mirror that ignores the event pays, to hold the model's blind column against.
The use case that boots a guest and runs all this is harness/app/evidence.py.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness.checks import drivers
from harness.checks.workloads import WRITEBACK_MNT, GuestSetup, Unavailable
from harness.kernel import userprogs
from harness.kernel.build import KernelBuild
from harness.results.compare import DeviceChange
from harness.vm.ssh import SSH, SSHError

MODES = ("blind", "context")
HMM = "test_hmm"  # the mode name of the runs against lib/test_hmm.c's device
COUNTERS = ("received", "acted", "skipped", "accesses", "faults", "refaults", "tracking_frees", "tracking_allocs",
            "verifies", "stale")


@dataclass(frozen=True)
class Workload:
    """One ev_mirror case: its program arguments and what the guest must provide first."""

    name: str
    case: str
    perm: str = "ro"
    pages: int = 256
    iters: int = 20
    needs: tuple[str, ...] = ()
    why: str = ""

    def argv(self, mode: str, pages: int | None = None, iters: int | None = None) -> list[str]:
        return ["/guest/bin/ev_mirror", self.case, self.perm, mode, *self._options(pages, iters)]

    def hmm_argv(self, binary: str, pages: int | None = None, iters: int | None = None) -> list[str]:
        """The same workload against test_hmm's device (guest/kprograms/ev_hmm.c, installed at `binary`)."""
        return [binary, self.case, self.perm, *self._options(pages, iters)]

    def _options(self, pages: int | None, iters: int | None) -> list[str]:
        args = [f"--pages={pages or self.pages}", f"--iters={iters or self.iters}"]
        return args + ([f"--dir={WRITEBACK_MNT}"] if "writeback_fs" in self.needs else [])


WORKLOADS = [
    Workload("writeback-ro", "writeback", needs=("writeback_fs",),
             why="a read-only export of a file under periodic writes and msync: PROTECTION_PAGE per page"),
    Workload("writeback-rw", "writeback", perm="rw", needs=("writeback_fs",),
             why="the same with a read-write mirror: context must act on every event"),
    Workload("softdirty-ro", "softdirty", why="clear_refs 4 then writes: one SOFT_DIRTY per cycle"),
    Workload("mprotect-ro", "mprotect", why="mprotect RO then RW: PROTECTION_VMA twice per cycle"),
    Workload("mprotect-rw", "mprotect", perm="rw", why="the same with a read-write mirror"),
    Workload("fork-ro", "fork", why="fork a child that exits, then write: PROTECTION_PAGE (COW), pages reused"),
    Workload("fork-cow-ro", "fork-cow", why="write while the child lives: CLEAR per copied page, frames change"),
    Workload("dontneed-ro", "dontneed", why="MADV_DONTNEED and refill: CLEAR, tracking kept in context mode"),
    Workload("munmap-ro", "munmap", why="munmap and mmap again: UNMAP, both modes tear down and free"),
    Workload("compaction-ro", "compaction", pages=32768, iters=2,
             why="1 in 16 pages kept, compact_memory: CLEAR for every migrated page"),
]
BY_NAME = {w.name: w for w in WORKLOADS}


def parse_mirror(line: str) -> dict:
    """One line of /sys/kernel/debug/mmu_probe/mirror: key=value fields; events=NAME:received:skipped,..."""
    out: dict = {}
    for token in line.split():
        key, _, value = token.partition("=")
        if key == "events":
            out["events"] = {name: {"received": int(r), "skipped": int(s)}
                             for name, r, s in (e.split(":") for e in value.split(",") if e)}
        elif key in ("perm", "mode"):
            out[key] = value
        else:
            out[key] = int(value, 0)
    out.setdefault("events", {})
    return out


def run_workload(ssh: SSH, w: Workload, mode: str, pages: int | None = None, iters: int | None = None) -> dict:
    """One run of a workload in one mode: the program's summary with its mirror's counters parsed."""
    ssh.run(["sh", "-c", "echo 1 > /sys/kernel/debug/mmu_probe/clear"], check=True)
    result = ssh.run(w.argv(mode, pages, iters), timeout=600)
    if not result.ok:
        raise SSHError(f"{w.name} ({mode}) failed:\n{result.describe()}")
    info = json.loads(result.stdout.strip().splitlines()[-1])
    info["counters"] = parse_mirror(info["mirror"])
    return info


def run_hmm_workload(ssh: SSH, w: Workload, binary: str, pages: int | None = None,
                     iters: int | None = None) -> dict:
    """One run of a workload against test_hmm's device: ev_hmm's summary (faults, faulted_accesses, ...)."""
    result = ssh.run(w.hmm_argv(binary, pages, iters), timeout=600)
    if not result.ok:
        raise SSHError(f"{w.name} ({HMM}) failed:\n{result.describe()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


class HmmUnavailable(Exception):
    """test_hmm cannot be the second device in this kernel or guest; the message says why."""


def prepare_hmm(ssh: SSH, build: KernelBuild) -> str:
    """Build ev_hmm against the tree, load test_hmm, install ev_hmm in the guest; its path there."""
    profile = drivers.load_driver("test_hmm")
    missing = [s for s in profile.config if not build.has(s)]
    if missing:
        raise HmmUnavailable(f"the kernel has no {', '.join('CONFIG_' + s for s in missing)}")
    binary = drivers.install(ssh, userprogs.kprogram(build, "ev_hmm"))
    if profile.device and not ssh.run(["test", "-e", profile.device]).ok:
        loaded = ssh.run(["modprobe", profile.module]) if profile.module else None
        if not ssh.run(["test", "-e", profile.device]).ok:
            why = loaded.stderr.strip() if loaded is not None and not loaded.ok else "no error"
            raise HmmUnavailable(f"{profile.device} did not appear after modprobe {profile.module}: {why}")
    return binary


def _median_counters(runs: list[dict]) -> tuple[dict, list[str]]:
    """The median of each counter over repeats, and the names of those that varied (compaction does)."""
    med = {k: int(statistics.median_low(r["counters"][k] for r in runs)) for k in COUNTERS}
    varies = [k for k in COUNTERS if len({r["counters"][k] for r in runs}) > 1]
    first = runs[0]["counters"]
    middle = sorted(runs, key=lambda r: r["counters"]["received"])[(len(runs) - 1) // 2]  # the median run's
    pages = (first["end"] - first["start"]) // runs[0]["page_size"]
    med.update(perm=first["perm"], pages=pages, events=middle["counters"]["events"])
    return med, varies


def summarise(runs: list[dict]) -> list[dict]:
    """Per workload, blind against context: counters (median over repeats; `varies` names those that were
    not the same every time), stale pages (the worst repeat) and the access-loop cycles and their ratio."""
    rows = []
    for name in dict.fromkeys(r["workload"] for r in runs):
        by_mode = {m: [r for r in runs if r["workload"] == name and r["mode"] == m] for m in MODES}
        if not all(by_mode.values()):
            continue
        (b, bvar), (c, cvar) = _median_counters(by_mode["blind"]), _median_counters(by_mode["context"])
        pairs = zip(by_mode["blind"], by_mode["context"], strict=False)  # repeat by repeat
        ratios = [rb["access_median_cycles"] / rc["access_median_cycles"] for rb, rc in pairs
                  if rc["access_median_cycles"]]
        row = {"workload": name, "perm": b["perm"], "mirror_pages": b["pages"],
               "received": c["received"], "acted_blind": b["acted"], "acted_context": c["acted"],
               "skipped_context": c["skipped"], "refaults_blind": b["refaults"], "refaults_context": c["refaults"],
               "refaults_avoided": b["refaults"] - c["refaults"],
               "pages_refaulted_blind": b["refaults"] * b["pages"],
               "pages_refaulted_context": c["refaults"] * c["pages"],
               "tracking_allocs_blind": b["tracking_allocs"], "tracking_allocs_context": c["tracking_allocs"],
               "stale_blind": max(r["counters"]["stale"] for r in by_mode["blind"]),
               "stale_context": max(r["counters"]["stale"] for r in by_mode["context"]),
               "frames_changed": statistics.median_low(r["frames_changed"] for r in by_mode["context"]),
               "events": c["events"], "varies": sorted(set(bvar) | set(cvar)),
               "repeats": min(len(v) for v in by_mode.values())}
        for m in MODES:
            kc = [r["access_median_cycles"] / 1000 for r in by_mode[m]]
            row[f"access_kcycles_{m}"] = {"min": min(kc), "median": statistics.median(kc), "max": max(kc)}
        row["ratio"] = ({"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}
                        if ratios else None)
        row["hmm"] = _hmm_summary([r for r in runs if r["workload"] == name and r["mode"] == HMM], row,
                                  by_mode["blind"])
        rows.append(row)
    return rows


HMM_COUNTERS = ("faults", "faulted_accesses", "first_faults", "warm_faults", "frames_changed", "changed_iters")


def _hmm_summary(runs: list[dict], row: dict, blind: list[dict]) -> dict | None:
    """test_hmm's device over repeats: medians of its counters (`varies` names those that were not the same
    every time), the worst `mismatched`, whether its faulted accesses equal the model's blind re-faults (the
    claim that the blind column is what a real mirror pays), and what one re-fault costs it: the timed access
    after the operation against a warm one right after it (the ratio per repeat).

    Where the kernel picks the pages (compaction), two runs are not the same workload: then what holds run by
    run is that every iteration that moved a mirrored page made the next access fault (`per_run` pairs the
    faulted accesses with those iterations, for test_hmm and for the model's blind runs)."""
    if not runs:
        return None
    out: dict = {k: int(statistics.median_low(r[k] for r in runs)) for k in HMM_COUNTERS}
    out["varies"] = [k for k in HMM_COUNTERS if len({r[k] for r in runs}) > 1]
    out["mismatched"] = max(r["mismatched"] for r in runs)
    out["repeats"] = len(runs)
    out["matches_blind"] = out["faulted_accesses"] == row["refaults_blind"]
    out["per_run"] = [{"faulted": r["faulted_accesses"], "moved_iters": r["changed_iters"],
                       "moved": r["frames_changed"]} for r in runs]
    out["per_run_blind"] = [{"faulted": r["counters"]["refaults"], "moved_iters": r.get("changed_iters"),
                             "moved": r["frames_changed"]} for r in blind]
    out["faulted_when_moved"] = all(r["faulted"] >= r["moved_iters"] for r in out["per_run"])
    for key, field in (("access_kcycles", "access_median_cycles"), ("warm_kcycles", "warm_access_median_cycles")):
        kc = [r[field] / 1000 for r in runs]
        out[key] = {"min": min(kc), "median": statistics.median(kc), "max": max(kc)}
    ratios = [r["access_median_cycles"] / r["warm_access_median_cycles"] for r in runs
              if r["warm_access_median_cycles"]]
    out["refault_ratio"] = ({"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}
                            if ratios else None)
    return out


def _hmm_cell(r: dict) -> str:
    h = r.get("hmm")
    if not h:
        return "n/a"
    extra = f" ({h['faults']} rounds)" if h["faults"] != h["faulted_accesses"] else ""
    return f"{h['faulted_accesses']}{extra}{'*' if h['varies'] else ''}"


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# mmu_notifier event evidence ({meta['date']}, Linux {meta['release']}, {meta['accel']}, "
             f"{meta['repeats']} repeats)", "",
             "| workload | mirror pages | events received | acted on blind / context | re-faults blind / context "
             "| test_hmm device faults | pages re-faulted blind / context | tracking allocs blind / context "
             "| stale pages blind / context | one device access blind : context (median ratio, min-max) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ratio = r["ratio"]
        timing = f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})" if ratio else "n/a"
        vary = "*" if r["varies"] else ""
        lines.append(f"| {r['workload']}{vary} | {r['perm']} {r['mirror_pages']} | {r['received']} "
                     f"| {r['acted_blind']} / {r['acted_context']} | {r['refaults_blind']} / {r['refaults_context']} "
                     f"| {_hmm_cell(r)} | {r['pages_refaulted_blind']} / {r['pages_refaulted_context']} "
                     f"| {r['tracking_allocs_blind']} / {r['tracking_allocs_context']} "
                     f"| {r['stale_blind']} / {r['stale_context']} | {timing} |")
    lines += ["", "Events received by the context-mode mirror (name: received/skipped):", ""]
    lines += [f"- {r['workload']}: " + ", ".join(f"{n} {e['received']}/{e['skipped']}" for n, e in r["events"].items())
              for r in rows]
    lines += ["", "Counters are per run, the median over repeats; * marks a workload whose counters varied "
              "between repeats (the kernel chose the pages). The access ratio compares the median TSC cycles of "
              "one timed device access (a re-fault in blind mode where context skipped), per repeat, under TCG "
              "on a loaded host: read it as a direction, the counters as the result.", ""]
    lines += hmm_markdown(rows, meta)
    return "\n".join(lines)


def _per_run(runs: list[dict]) -> str:
    return ", ".join(f"{r['faulted']} ({r['moved']} pages in {r['moved_iters']})" for r in runs)


def hmm_markdown(rows: list[dict], meta: dict) -> list[str]:
    """The test_hmm paragraph: which workloads it ran, where its faults equal the model's blind re-faults,
    every one where they do not (both numbers), the kernel-chosen ones run by run, and what a re-fault costs it."""
    if meta.get("hmm_skipped"):
        return [f"test_hmm (lib/test_hmm.c) did not run: {meta['hmm_skipped']}.", ""]
    ran = [r for r in rows if r.get("hmm")]
    if not ran:
        return []
    fixed = [r for r in ran if not r["varies"] and not r["hmm"]["varies"]]
    same = [r["workload"] for r in fixed if r["hmm"]["matches_blind"]]
    lines = ["test_hmm device faults: the accesses (HMM_DMIRROR_READ, or WRITE for an rw mirror, of the same "
             "range after the same operation) that had to fault pages back in, on lib/test_hmm.c's device, which "
             "acts on every invalidation but its own MIGRATE (guest/kprograms/ev_hmm.c); in brackets the fault "
             "rounds (cmd.faults) where they were more than one per access.", "",
             f"- equal to the model's blind re-faults in every repeat: {len(same)} of {len(fixed)} deterministic "
             "workloads" + (f" ({', '.join(same)})" if same else "")]
    lines += [f"- **differs** in {r['workload']}: test_hmm {r['hmm']['faulted_accesses']}, model blind "
              f"{r['refaults_blind']}" + (f"; test_hmm also faulted {r['hmm']['warm_faults']} times with no operation "
                                          "in between" if r["hmm"]["warm_faults"] else "")
              for r in fixed if not r["hmm"]["matches_blind"]]
    for r in (r for r in ran if r not in fixed):
        h = r["hmm"]
        lines.append(f"- {r['workload']}: the kernel picks the pages, so runs differ; per run, accesses that faulted "
                     f"(mirrored pages moved, in how many iterations): test_hmm {_per_run(h['per_run'])}; model "
                     f"blind {_per_run(h['per_run_blind'])}. "
                     + ("test_hmm faulted after every iteration that moved a page." if h["faulted_when_moved"] else
                        "**test_hmm did not fault after an iteration that moved a mirrored page.**"))
    if bad := [r["workload"] for r in ran if r["hmm"]["mismatched"] > 0]:
        lines.append(f"- the device read other bytes than the CPU in: {', '.join(bad)}")
    lines += ["", "What one re-fault costs test_hmm's device: its access right after the operation against the same "
              "access again at once (warm, no fault), median TSC kcycles, ratio per repeat (TCG: a direction):", ""]
    for r in ran:
        h = r["hmm"]
        ratio = h["refault_ratio"]
        lines.append(f"- {r['workload']}: {h['access_kcycles']['median']:.0f} vs {h['warm_kcycles']['median']:.0f} "
                     + (f"({ratio['median']:.2f}x, {ratio['min']:.2f}-{ratio['max']:.2f})" if ratio else ""))
    return [*lines, ""]


def plot(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["workload"] for r in rows]
    x = range(len(rows))
    files: list[Path] = []

    def save(fig, ax, name: str) -> None:
        ax.set_xticks(list(x), names, rotation=30, ha="right")
        fig.tight_layout()
        files.append(out / name)
        fig.savefig(files[-1])
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 4))
    w = 0.4
    ax.bar([i - w / 2 for i in x], [r["acted_blind"] for r in rows], w, label="acted on (blind)")
    ax.bar([i + w / 2 for i in x], [r["acted_context"] for r in rows], w, label="acted on (context)")
    ax.set_yscale("symlog")  # 5120 next to 20: a linear axis hides the small workloads
    ax.set_ylabel("invalidations (symlog)")
    ax.set_title("Invalidations a mirror had to act on")
    ax.legend()
    save(fig, ax, "invalidations.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    w3 = 0.27
    ax.bar([i - w3 for i in x], [r["refaults_blind"] for r in rows], w3, label="model, blind")
    ax.bar(list(x), [r["refaults_context"] for r in rows], w3, label="model, context")
    ax.bar([i + w3 for i in x], [r["hmm"]["faulted_accesses"] if r.get("hmm") else 0 for r in rows], w3,
           label="test_hmm device (0: not run)")
    ax.set_ylabel("device accesses that re-faulted")
    ax.set_title("Re-faults: the model driver's two policies and lib/test_hmm.c")
    ax.set_ylim(0, max([r["refaults_blind"] for r in rows] + [1]) * 1.3)  # room for the legend above the bars
    ax.legend(loc="upper center", ncol=3)
    save(fig, ax, "refaults.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    for off, m in ((-w / 2, "blind"), (w / 2, "context")):
        med = [r[f"access_kcycles_{m}"]["median"] for r in rows]
        lo = [r[f"access_kcycles_{m}"]["median"] - r[f"access_kcycles_{m}"]["min"] for r in rows]
        hi = [r[f"access_kcycles_{m}"]["max"] - r[f"access_kcycles_{m}"]["median"] for r in rows]
        ax.bar([i + off for i in x], med, w, yerr=[lo, hi], capsize=3, label=m)
    ax.set_yscale("log")
    ax.set_ylabel("kcycles per access (TSC)")
    ax.set_title("Median time of one device access (TCG)")
    ax.legend()
    save(fig, ax, "access_time.png")
    return files


def write_report(out: Path, runs: list[dict], meta: dict, devices: dict | None = None) -> list[dict]:
    """evidence.json (meta, summary, runs, and `devices`: device -> workload -> counters), evidence.md, plots."""
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(runs)
    (out / "evidence.json").write_text(json.dumps({"meta": meta, "summary": rows, "runs": runs,
                                                   "devices": devices or {}}, indent=1) + "\n")
    (out / "evidence.md").write_text(markdown(rows, meta) + device_markdown(devices or {}))
    if rows:
        plot(rows, out)
    return rows


def devices_of(changes: list[DeviceChange], stock: str, aware: str) -> dict:
    """A compare's device counters as evidence.json's `devices`: the base is the stock driver, the patched one
    the event-aware driver; per workload the counters and the access-time ratio (event-aware over stock)."""
    out: dict[str, dict] = {}
    for d in changes:
        out.setdefault(d.device, {})[d.workload] = {stock: d.before, aware: d.after,
                                                    "access_time_ratio": d.time_ratio}
    return out


def device_markdown(devices: dict) -> str:
    lines = []
    for device, workloads in devices.items():
        sides = [k for k in next(iter(workloads.values()), {}) if k != "access_time_ratio"]
        if len(sides) != 2:
            continue
        stock, aware = sides
        lines += ["", f"## {device}: {stock} → {aware}", "",
                  "| workload | invalidations | acted on | device faults | stale bytes | access time ratio |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, w in workloads.items():
            a, b = w[stock], w[aware]
            ratio = w["access_time_ratio"]
            cells = [f"{a.get(k, '-')} → {b.get(k, '-')}" for k in ("invalidations", "acted", "device_faults", "stale")]
            shown = f"{ratio[0]:.2f} ({ratio[1]:.2f} to {ratio[2]:.2f})" if ratio else "-"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {shown} |")
    return "\n".join(lines) + ("\n" if lines else "")


def collect(ssh: SSH, workloads: list[Workload], repeats: int, log=print,
            hmm_binary: str | None = None) -> tuple[list[dict], list[str]]:
    """Every workload in both modes, `repeats` times, interleaved so that load drifts hit both modes alike;
    with `hmm_binary` (ev_hmm in the guest), also against test_hmm's device where it applies."""
    runs, skipped = [], []
    setup = GuestSetup(ssh)
    try:
        for w in workloads:
            try:
                for need in w.needs:
                    setup.provide(need)
            except Unavailable as e:
                skipped.append(f"{w.name}: {e}")
                continue
            for rep in range(repeats):
                for mode in MODES:
                    info = run_workload(ssh, w, mode)
                    runs.append({"workload": w.name, "mode": mode, "repeat": rep,
                                 "access_cycles": info["access_cycles"],
                                 "access_median_cycles": info["access_median_cycles"],
                                 "page_size": info["page_size"],
                                 "frames_changed": info["frames_changed"], "changed_iters": info["changed_iters"],
                                 "counters": info["counters"],
                                 "pages": info["pages"], "iters": info["iters"]})
                    c = info["counters"]
                    log(f"  {w.name:<14} {mode:<8} #{rep}: received {c['received']}, acted {c['acted']}, "
                        f"skipped {c['skipped']}, refaults {c['refaults']}, stale {c['stale']}, "
                        f"one access {info['access_median_cycles'] / 1000:.0f} kcycles")
                if hmm_binary:
                    info = run_hmm_workload(ssh, w, hmm_binary)
                    runs.append({"workload": w.name, "mode": HMM, "repeat": rep,
                                 **{k: info[k] for k in (*HMM_COUNTERS, "mismatched", "access_cycles",
                                                         "access_median_cycles", "warm_access_median_cycles",
                                                         "page_size", "pages", "iters", "mirror_pages")}})
                    log(f"  {w.name:<14} {HMM:<8} #{rep}: faulted accesses {info['faulted_accesses']}, "
                        f"fault rounds {info['faults']}, warm faults {info['warm_faults']}, "
                        f"mismatched {info['mismatched']}, frames changed {info['frames_changed']}, one access "
                        f"{info['access_median_cycles'] / 1000:.0f} kcycles, warm "
                        f"{info['warm_access_median_cycles'] / 1000:.0f}")
    finally:
        setup.restore()
    return runs, skipped
