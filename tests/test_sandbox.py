"""Untrusted build steps (harness/kernel/sandbox.py), on a tiny fake tree whose Makefile and Kconfig try to write
where a build must not: every such write fails, writes inside the build directory land, and what the step
leaves behind is checked before root reads it. Run as root (as the harness and CI are): the point is what a
root harness lets an untrusted tree do."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import paths
from harness.kernel import kconfig, patches, sandbox
from harness.kernel.build import ccache_env, ccache_outcomes, run_logged
from harness.kernel.source import KernelTree

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap"),
                                reason="confining a build is what a root harness does (needs root and bwrap)")

MAKEFILE = """\
all:
\t-echo pwned > /tmp/outside-$(TAG)
\t-echo pwned > /root/outside-$(TAG)
\t-echo pwned > $(BESIDE)
\t-echo pwned > $(CANARY)
\t-echo pwned > $(OPEN_CANARY)
\t-echo pwned > $(OPEN_DIR)/new-$(TAG)
\t-cat /proc/sys/kernel/core_pattern > /proc/sys/kernel/core_pattern
\techo inside > $(O)/inside
\tid -u > $(O)/uid
\tcat /proc/net/dev > $(O)/net
"""

KCONFIG = """\
mainmenu "fake"
config WHO
\tstring
\tdefault "$(shell,id -u)"
config TRIED
\tstring
\tdefault "$(shell,echo pwned > {canary}; echo pwned > /tmp/outside-k-{tag}; touch {open_dir}/new-k-{tag}; echo done)"
"""


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path | str]]:
    """A fake untrusted tree in a cache of its own, and canaries root can write outside it: a root-owned file
    (only the uid drop stops a write), a world-writable file and directory (only the read-only mount stops it),
    and a file beside the cache."""
    tag = uuid.uuid4().hex[:12]
    outside = Path("/var/tmp") / f"harness-sandbox-test-{tag}"
    cache = outside / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    tree = cache / "src" / "patched" / "fake"
    build = tree / "harness-build-fake"
    (tree / "arch/x86").mkdir(parents=True)
    build.mkdir()
    open_dir = outside / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    canary, open_canary, beside = outside / "canary", open_dir / "canary", outside / "beside"
    for path, mode in ((canary, 0o644), (open_canary, 0o666)):
        path.write_text("canary\n")
        path.chmod(mode)
    (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\n" + MAKEFILE)
    (tree / "Kconfig").write_text(KCONFIG.format(canary=canary, tag=tag, open_dir=open_dir))
    (tree / "arch/x86/Kconfig").write_text("")
    yield {"tag": tag, "tree": tree, "build": build, "canary": canary, "open_canary": open_canary,
           "open_dir": open_dir, "beside": beside, "outside": outside}
    shutil.rmtree(outside, ignore_errors=True)
    for leftover in (Path(f"/tmp/outside-{tag}"), Path(f"/tmp/outside-k-{tag}"), Path(f"/root/outside-{tag}")):
        leftover.unlink(missing_ok=True)


def fake_tree(places: dict[str, Path | str]) -> KernelTree:
    tree = Path(places["tree"])
    base = KernelTree(tree.parent, "6.12.0", "debian:fake", immutable=True)
    return KernelTree(tree, "6.12.0", f"debian:fake+{places['tag']}", immutable=True, base=base)


def assert_nothing_written_outside(places: dict[str, Path | str]) -> None:
    tag = places["tag"]
    for path in (Path(f"/tmp/outside-{tag}"), Path(f"/tmp/outside-k-{tag}"), Path(f"/root/outside-{tag}"),
                 Path(places["beside"]), Path(places["open_dir"]) / f"new-{tag}",
                 Path(places["open_dir"]) / f"new-k-{tag}"):
        assert not path.exists(), f"the untrusted step wrote {path}"
    for canary in (Path(places["canary"]), Path(places["open_canary"])):
        assert canary.read_text() == "canary\n", f"the untrusted step wrote {canary}"


def test_a_makefile_writes_only_its_build_directory(places: dict[str, Path | str]):
    tree, build = fake_tree(places), Path(places["build"])
    core_pattern = Path("/proc/sys/kernel/core_pattern").read_text()
    jail = sandbox.for_tree(tree, writable=(build,))
    assert jail is not None
    run_logged(["make", "-C", str(tree.path), f"O={build}", f"TAG={places['tag']}", f"BESIDE={places['beside']}",
                f"CANARY={places['canary']}", f"OPEN_CANARY={places['open_canary']}",
                f"OPEN_DIR={places['open_dir']}"], build / "build.log", "fake build", jail=jail)
    assert_nothing_written_outside(places)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
    log = (build / "build.log").read_text()
    # / is read-only, even where root's file modes would let anyone write; /root and the cache are root's
    # tmpfs; sysctl lets euid 0 write core_pattern: /proc/sys is read-only, and the step is not euid 0 (uid below)
    for target, error in ((places["canary"], "Read-only file system"), (places["open_canary"], "Read-only file system"),
                          (f"{places['open_dir']}/new-{places['tag']}", "Read-only file system"),
                          (places["beside"], "Read-only file system"),
                          (f"/root/outside-{places['tag']}", "Permission denied"),
                          ("/proc/sys/kernel/core_pattern", "Read-only file system")):
        assert f"cannot create {target}: {error}" in log, log
    # inside the build directory the step wrote, as the sandbox's uid, with no network but its loopback
    assert (build / "inside").read_text() == "inside\n"
    assert (build / "uid").read_text().strip() == str(sandbox.UID)
    interfaces = [line.split(":")[0].strip() for line in (build / "net").read_text().splitlines()[2:]]
    assert interfaces == ["lo"]
    # and root owns all of it again before the harness reads it
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [build, *build.iterdir()]} == {(0, 0)}


def test_kconfig_shell_of_an_untrusted_tree_runs_confined(places: dict[str, Path | str]):
    tree = fake_tree(places)
    kconf = kconfig.load_tree(tree.path, tree.version, sandbox.for_tree(tree))
    assert kconf.syms["TRIED"].str_value == "done"  # the command ran, and its output came back
    assert kconf.syms["WHO"].str_value == str(sandbox.UID)
    assert_nothing_written_outside(places)


def test_kconfig_shell_of_a_trusted_tree_runs_as_before(places: dict[str, Path | str]):
    tree = Path(places["tree"])
    (tree / "Kconfig").write_text('mainmenu "fake"\nconfig WHO\n\tstring\n\tdefault "$(shell,id -u)"\n')
    kconf = kconfig.load_tree(tree, "6.12.0")
    assert kconf.syms["WHO"].str_value == "0"


def test_what_a_step_leaves_is_checked_before_root_reads_it(places: dict[str, Path | str]):
    tree, build = fake_tree(places), Path(places["build"])
    link = paths.cache_root() / "builds" / "6.12.0-fake"  # a build is named through builds/, as build_dir does
    link.parent.mkdir(parents=True)
    link.symlink_to(build)
    jail = sandbox.for_tree(tree, writable=(link,))
    assert jail is not None
    script = (f"echo x > inside && ln -s {places['canary']} build.log && mkfifo fifo && ln -s inside ok-link && "
              "ln -s .. source && mkdir -p arch/x86_64 && ln -s ../../x86/boot/bzImage arch/x86_64/bzImage && "
              "cp /bin/true suid && chmod u+s,o+w suid")
    with pytest.raises(sandbox.SandboxError) as e:
        jail.run(["sh", "-c", script], cwd=build)
    assert f"build.log -> {places['canary']}" in str(e.value) and "fifo (a fifo)" in str(e.value)
    assert not (build / "build.log").is_symlink() and not (build / "fifo").exists()
    # links inside the build, or to its tree, are a build's own (Kbuild's source -> .., arch/x86_64's bzImage)
    assert all((build / name).is_symlink() for name in ("ok-link", "source", "arch/x86_64/bzImage"))
    st = (build / "suid").stat()
    assert (st.st_uid, st.st_mode & (stat.S_ISUID | stat.S_IWOTH)) == (0, 0)
    assert Path(places["canary"]).read_text() == "canary\n"


def test_a_directory_never_given_back_is_taken_back_before_root_writes_in_it(places: dict[str, Path | str]):
    """The harness killed during a step leaves its directory with the sandbox's uid (and what it planted)."""
    tree, build = fake_tree(places), Path(places["build"])
    os.symlink(places["canary"], build / ".config")
    os.lchown(build / ".config", sandbox.UID, sandbox.GID)
    os.chown(build, sandbox.UID, sandbox.GID)
    with pytest.raises(sandbox.SandboxError, match="a symlink out of the build"):
        sandbox.for_tree(tree, writable=(build,))  # a jail for it first takes it back
    assert not (build / ".config").exists() and build.stat().st_uid == 0


def test_trusted_trees_and_a_harness_that_is_not_root_run_steps_as_before(places: dict[str, Path | str],
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture[str]):
    tree = fake_tree(places)
    assert tree.base is not None
    assert sandbox.for_tree(tree.base) is None  # Debian's tree: trusted
    monkeypatch.setattr(sandbox, "_said_degraded", [])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert sandbox.for_tree(tree) is None
    assert "untrusted build steps run as that user" in capsys.readouterr().err
    assert sandbox.Jail((tree.path,)).wrap(["make"]) == ["make"]


def test_the_view_of_a_step_hides_the_cache_but_for_its_own_paths(places: dict[str, Path | str]):
    tree, build = Path(places["tree"]), Path(places["build"])
    link = paths.cache_root() / "builds" / "6.12.0-fake"
    link.parent.mkdir(parents=True)
    link.symlink_to(build)
    (paths.cache_root() / "ccache").mkdir()
    args = sandbox.Jail((tree,), (link,)).bwrap_args()
    text = " ".join(args)
    assert f"--tmpfs {paths.cache_root()}" in text and "--ro-bind / /" in text and "--unshare-net" in text
    assert f"--dir {paths.cache_root() / 'src'}" in text
    assert f"--ro-bind {tree} {tree}" in text and f"--bind {build} {build}" in text
    assert f"--symlink {build} {link}" in text
    assert f"--ro-bind {paths.cache_root() / 'ccache'} {paths.cache_root() / 'ccache'}" in text  # its hits, read-only
    assert args.index(f"{paths.cache_root()}") < args.index(f"{tree}")  # the mask first, then what shows through
    proc = subprocess.run([*sandbox.Jail((tree,), (link,)).wrap(["ls", "-A", str(paths.cache_root())])],
                          capture_output=True, text=True)
    assert sorted(proc.stdout.split()) == ["builds", "ccache", "src"], proc.stderr


def test_a_series_cannot_link_out_of_its_tree(places: dict[str, Path | str]):
    path = Path(places["outside"]) / "base"
    shutil.copytree(Path(places["tree"]), path, ignore=shutil.ignore_patterns("harness-build-*"))
    base = KernelTree(path, "6.12.0", "debian:fake", immutable=True)
    patch = ("--- /dev/null\n+++ b/evil\n@@ -0,0 +1 @@\n+/etc/shadow\n\\ No newline at end of file\n")
    patch = "diff --git a/evil b/evil\nnew file mode 120000\nindex 0000000..1111111\n" + patch
    with pytest.raises(patches.PatchError, match="evil becomes a symlink out of the tree"):
        patches.patched_tree(base, "debian:fake", patches.split_mbox(patch.encode(), "evil.patch"))


def test_a_confined_build_hits_roots_ccache_and_stores_nothing(places: dict[str, Path | str]):
    tree, build = fake_tree(places), Path(places["build"])
    (build / "hit.c").write_text(f"int tag(void) {{ return 0x{places['tag'][:6]}; }}\n")
    ccache_dir = Path(ccache_env()["CCACHE_DIR"])
    subprocess.run(["ccache", "gcc", "-c", "hit.c", "-o", "root.o"], cwd=build, env=ccache_env(), check=True)  # trusted
    env = {**ccache_env(), "CCACHE_STATSLOG": str(build / "stats")}
    stored = sorted(p for p in ccache_dir.rglob("*") if p.is_file() and p.name != "stats")
    (build / "miss.c").write_text(f"int other(void) {{ return 0x{places['tag'][6:]}; }}\n")
    jail = sandbox.for_tree(tree, writable=(build,))
    assert jail is not None
    proc = jail.run(["sh", "-c", "ccache gcc -c hit.c -o hit.o && ccache gcc -c miss.c -o miss.o"], env=env, cwd=build)
    assert proc.returncode == 0, proc.stderr
    assert ccache_outcomes(build / "stats") == {"hits": 1, "misses": 1}  # root's entry read; the new one compiled
    assert sorted(p for p in ccache_dir.rglob("*") if p.is_file() and p.name != "stats") == stored  # and not stored


def test_a_patched_tree_is_readable_by_its_confined_build(places: dict[str, Path | str]):
    """patched_tree() makes the tree with mkdtemp (0700): the sandbox's uid must still read it."""
    path = Path(places["outside"]) / "base"
    shutil.copytree(Path(places["tree"]), path, ignore=shutil.ignore_patterns("harness-build-*"))
    base = KernelTree(path, "6.12.0", "debian:fake", immutable=True)
    patch = "--- /dev/null\n+++ b/added.txt\n@@ -0,0 +1 @@\n+from the series\n"
    _, tree = patches.patched_tree(base, str(path), patches.split_mbox(patch.encode(), "add.patch"))
    jail = sandbox.for_tree(tree)
    assert jail is not None
    proc = jail.run(["cat", str(tree.path / "added.txt")])
    assert (proc.returncode, proc.stdout) == (0, "from the series\n"), proc.stderr


@pytest.mark.kernel_trees
def test_kconfig_probes_answer_the_same_in_the_sandbox():
    """Debian's 6.12 read confined gives every symbol the value it has unconfined: the compiler and rustc probes
    of Kconfig.include work there (else a patched tree's .config differs from its base's, and its build is cold)."""
    from harness.kernel import source

    base = source.resolve("debian:6.12")
    patch = "--- /dev/null\n+++ b/harness-sandbox-probes.txt\n@@ -0,0 +1 @@\n+tests/test_sandbox.py: a patched copy\n"
    _, tree = patches.patched_tree(base, "debian:6.12", patches.split_mbox(patch.encode(), "probes.patch"))  # made once
    jail = sandbox.for_tree(tree)
    assert jail is not None
    free = kconfig.value_snapshot(kconfig.load_tree(tree.path, tree.version))
    confined = kconfig.value_snapshot(kconfig.load_tree(tree.path, tree.version, jail))
    assert free["RUSTC_VERSION"] != "0" and free["CC_HAS_SANE_STACKPROTECTOR"] == "y"
    assert {k: (v, confined.get(k)) for k, v in free.items() if confined.get(k) != v} == {}


def test_roots_files_stay_roots_where_the_mount_is_writable(places: dict[str, Path | str]):
    """The uid drop on its own: a root-owned 0644 file in the very directory the step may write (what euid 0,
    even without capabilities, could overwrite: sysctl's core_pattern is checked the same way)."""
    tree, build = fake_tree(places), Path(places["build"])
    jail = sandbox.for_tree(tree, writable=(build,))
    assert jail is not None
    with jail.lent():
        owned = build / "roots"
        owned.write_text("canary\n")
        owned.chmod(0o644)
        proc = subprocess.run(jail.wrap(["sh", "-c", f"echo pwned > {owned}"]), env=jail.env(os.environ),
                              capture_output=True, text=True)
    assert f"cannot create {owned}: Permission denied" in proc.stderr, proc.stderr
    assert owned.read_text() == "canary\n"


def test_a_step_is_not_given_the_harness_credentials(places: dict[str, Path | str]):
    jail = sandbox.for_tree(fake_tree(places))
    assert jail is not None
    env = jail.env({"PATH": "/usr/bin", "GITHUB_TOKEN": "t", "CI_JOB_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "k",
                    "SSH_AUTH_SOCK": "/s", "NPM_PASSWORD": "p", "KCONFIG_ALLCONFIG": "/a", "CC": "gcc"})
    assert {k: v for k, v in env.items() if k in ("PATH", "KCONFIG_ALLCONFIG", "CC")} == \
        {"PATH": "/usr/bin", "KCONFIG_ALLCONFIG": "/a", "CC": "gcc"}
    assert not {"GITHUB_TOKEN", "CI_JOB_TOKEN", "AWS_SECRET_ACCESS_KEY", "SSH_AUTH_SOCK", "NPM_PASSWORD"} & set(env)
    assert (env["HOME"], env["CCACHE_READONLY"], env["KBUILD_BUILD_USER"]) == ("/tmp", "1", sandbox.USER)


def test_a_release_a_stamp_names_is_one_path_component(tmp_path: Path):
    """An untrusted build can write its own stamp: the release it names becomes lib/modules/<release> of the
    image, so it must stay one directory there."""
    stamp = tmp_path / ".harness-built.json"
    stamp.write_text('{"release": "6.12.118-harness+"}')
    assert sandbox.release_in(stamp) == "6.12.118-harness+"
    for bad in ("../../../etc", "6.12/../x", "", ".hidden", 6):
        stamp.write_text(json.dumps({"release": bad}))
        with pytest.raises(sandbox.SandboxError, match="is not a kernel release"):
            sandbox.release_in(stamp)
