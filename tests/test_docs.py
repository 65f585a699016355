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


OUTSIDE = re.compile(r"pitfall \d|DESIGN\.md|reference/conventions\.md|seed README|\.\./shared/")


def test_code_points_to_nothing_outside_the_repository():
    """A docstring's reference must be readable by whoever clones the repository: no "pitfall N", no spec or
    reference notes that only the developers had."""
    found = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if ".git" in path.parts or rel.parts[:3] == ("tests", "fixtures", "reference") or rel.parts[0] == "tmp":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line) and "OUTSIDE = " not in line:
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "references outside the repository:\n" + "\n".join(found)
