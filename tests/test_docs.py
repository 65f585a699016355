"""Every ``docs/<page>.md#<anchor>`` that a docstring or comment names exists: the page, and a heading with that
anchor (GitHub's rule: lower case, punctuation dropped, spaces to hyphens)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")


def anchors(page: Path) -> set[str]:
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_doc_links_in_code_point_to_existing_headings():
    pages: dict[str, set[str]] = {}
    missing, seen = [], 0
    for path in sorted(REPO.rglob("*.py")):
        if ".git" in path.parts:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for page, anchor in LINK.findall(line):
                seen += 1
                if page not in pages:
                    doc = REPO / "docs" / page
                    pages[page] = anchors(doc) if doc.is_file() else set()
                if anchor not in pages[page]:
                    missing.append(f"{path.relative_to(REPO)}:{n}: docs/{page}#{anchor}")
    assert seen > 0
    assert not missing, "links to no heading:\n" + "\n".join(missing)
