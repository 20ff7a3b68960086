from pathlib import Path

import pytest

from harness.kernel.build import BuildError, content_key, event_names_header, make_cmd, parse_event_enum
from harness.kernel.source import KernelTree

ENUM_6_12 = """
enum mmu_notifier_event {
	MMU_NOTIFY_UNMAP = 0,
	MMU_NOTIFY_CLEAR,
	MMU_NOTIFY_PROTECTION_VMA,
	MMU_NOTIFY_PROTECTION_PAGE,
	MMU_NOTIFY_SOFT_DIRTY,
	MMU_NOTIFY_RELEASE,
	MMU_NOTIFY_MIGRATE,
	MMU_NOTIFY_EXCLUSIVE,
};
"""

# The 2019 original (v5.2): five events, with a doc comment per value.
ENUM_5_2 = """
/**
 * enum mmu_notifier_event - reason for the mmu notifier callback
 * @MMU_NOTIFY_UNMAP: either munmap() ...
 */
enum mmu_notifier_event {
	MMU_NOTIFY_UNMAP = 0,
	MMU_NOTIFY_CLEAR,
	MMU_NOTIFY_PROTECTION_VMA,
	MMU_NOTIFY_PROTECTION_PAGE,
	MMU_NOTIFY_SOFT_DIRTY,
};
"""


def test_enum_names_in_order():
    assert parse_event_enum(ENUM_6_12) == [
        "MMU_NOTIFY_UNMAP", "MMU_NOTIFY_CLEAR", "MMU_NOTIFY_PROTECTION_VMA", "MMU_NOTIFY_PROTECTION_PAGE",
        "MMU_NOTIFY_SOFT_DIRTY", "MMU_NOTIFY_RELEASE", "MMU_NOTIFY_MIGRATE", "MMU_NOTIFY_EXCLUSIVE"]
    assert len(parse_event_enum(ENUM_5_2)) == 5


def test_missing_enum_is_an_error():
    with pytest.raises(BuildError, match="enum mmu_notifier_event"):
        parse_event_enum("struct foo {};")


def test_generated_header_binds_names_to_the_kernels_own_values(tmp_path: Path):
    (tmp_path / "include/linux").mkdir(parents=True)
    (tmp_path / "include/linux/mmu_notifier.h").write_text(ENUM_5_2)
    header = event_names_header(tmp_path)
    # designated initializers: the compiler, not the harness, decides each value
    assert '[MMU_NOTIFY_SOFT_DIRTY] = "SOFT_DIRTY",' in header
    assert "RELEASE" not in header


def test_content_key_is_stable_and_delimited():
    assert content_key("ab", "c") == content_key("ab", "c")
    assert content_key("ab", "c") != content_key("a", "bc")


def test_make_cmd_builds_out_of_tree_with_ccache():
    tree = KernelTree(Path("/src/linux"), "6.12.0", "git:abc", immutable=False)
    cmd = make_cmd(tree, Path("/out"), "bzImage", jobs=2)
    assert cmd[:4] == ["make", "-C", "/src/linux", "O=/out"]
    assert "CC=ccache gcc" in cmd and "-j2" in cmd and cmd[-1] == "bzImage"


TWO_PASS_OPS = """
struct mmu_interval_notifier_ops {
    bool (*invalidate)(struct mmu_interval_notifier *interval_sub,
               const struct mmu_notifier_range *range, unsigned long cur_seq);
    bool (*invalidate_start)(struct mmu_interval_notifier *interval_sub,
                 const struct mmu_notifier_range *range, unsigned long cur_seq,
                 struct mmu_interval_notifier_finish **finish);
    void (*invalidate_finish)(struct mmu_interval_notifier_finish *finish);
};
"""


def test_the_two_pass_notifier_is_told_from_the_ops_struct_alone(tmp_path: Path):
    (tmp_path / "include/linux").mkdir(parents=True)
    (tmp_path / "include/linux/mmu_notifier.h").write_text(ENUM_5_2 + TWO_PASS_OPS)
    assert event_names_header(tmp_path).endswith("#define MMU_PROBE_TWO_PASS 1\n")
    one_pass = TWO_PASS_OPS.replace("invalidate_finish", "x").replace("*invalidate_start", "*y")
    # a comment naming the callback elsewhere (6.12's header does not; a patch might) is not the member
    (tmp_path / "include/linux/mmu_notifier.h").write_text(ENUM_5_2 + one_pass + "/* (*invalidate_finish) */")
    assert "MMU_PROBE_TWO_PASS" not in event_names_header(tmp_path)


@pytest.mark.kernel_trees
@pytest.mark.parametrize("version, two_pass", [("6.12", False), ("7.3", True)])
def test_the_two_pass_notifier_is_found_in_7_x_and_not_before(version, two_pass):
    from tests.trees import kernel_tree
    assert ("MMU_PROBE_TWO_PASS" in event_names_header(kernel_tree(version))) == two_pass
