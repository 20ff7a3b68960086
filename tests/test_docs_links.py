"""The README is a short front door and docs/ holds the rest: every relative link in them must lead to a file of
the repository (and, with a #fragment, to a heading there), the README stays short, links every page of docs/,
and cites code and measurements rather than internal issue numbers. The module tree stands in one fenced block
under "## Architecture", the same in the README and in docs/architecture.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
README_MAX_LINES = 220

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
ISSUE = re.compile(r"\bissues?\s+#?\d+", re.I)


def prose(text: str) -> str:
    """The text without fenced blocks and inline code, where brackets and '#' are not markdown."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (backticks, colons, slashes, dots) dropped,
    spaces turned into hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    """Each relative link of `page` whose file does not exist, or whose #fragment names no heading there."""
    problems = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.is_relative_to(REPO) or not dest.exists():
            problems.append(f"{page.relative_to(REPO)}: {target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest.read_text()):
            problems.append(f"{page.relative_to(REPO)}: {target}: no heading #{fragment} in {dest.relative_to(REPO)}")
    return problems


def section(text: str, heading: str) -> str:
    """The body of a `## heading` section, up to the next heading of level 1 or 2 outside a fenced block."""
    blocks: list[str] = []
    masked = FENCE.sub(lambda m: blocks.append(m.group(0)) or f"\0{len(blocks) - 1}\0", text)
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^#{{1,2}} |\Z)", masked, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return re.sub(r"\0(\d+)\0", lambda m: blocks[int(m.group(1))], match.group(1))


def fenced_blocks(text: str) -> list[str]:
    return [m.group(0) for m in FENCE.finditer(text)]


def harness_tree(text: str) -> str:
    trees = [b for b in fenced_blocks(text) if b.splitlines()[1:2] == ["harness/"]]
    assert len(trees) == 1, f"expected one fenced block starting with 'harness/', found {len(trees)}"
    return trees[0]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_no_internal_issue_numbers(page):
    cited = [m.group(0) for m in ISSUE.finditer(page.read_text())]
    assert cited == [], f"{page.relative_to(REPO)} cites {cited}: describe the work and cite code or a measurement"


def test_readme_is_a_front_door():
    lines = README.read_text().count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/ (at most {README_MAX_LINES})"


def test_readme_links_every_docs_page():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in LINK.findall(prose(README.read_text()))}
    unlinked = [str(p.relative_to(REPO)) for p in DOCS if p.resolve() not in linked]
    assert unlinked == [], f"README.md does not link {unlinked}"


def test_architecture_tree_is_one_block_and_the_same_in_docs():
    readme_section = section(README.read_text(), "Architecture")
    blocks = fenced_blocks(readme_section)
    assert len(blocks) == 1, f"README's Architecture section has {len(blocks)} fenced blocks, expected the tree alone"
    assert blocks[0].splitlines()[1] == "harness/"
    assert harness_tree((REPO / "docs" / "architecture.md").read_text()) == blocks[0]


def test_the_checker_finds_a_broken_link_and_a_missing_heading(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Two: `words`\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#two-words) [gone](docs/b.md) [bad](docs/a.md#three)\n"
                    "`[code](not/a/link.md)`\n```\n[fenced](nor/this.md)\n```\n[web](https://example.org/x)\n")
    assert broken_links(page) == ["README.md: docs/b.md: no such file",
                                  "README.md: docs/a.md#three: no heading #three in docs/a.md"]
