"""The contract lives in docs/api.md, and what cites it cannot rot.

Code and tests cite a section of docs/api.md as ``docs/api.md#<anchor>``; the docs link
each other's sections the same way. A heading renamed without its citations, or a
citation to a section that never existed, fails here rather than sending a reader to
the top of a page. And no citation names an outside spec a reader cannot open.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api.md"
# Where citations live: the code, its tests and benchmarks, and the documentation.
CITING = ("ringsum", "tests", "benchmarks", "deploy", "docs", "app.py", "README.md", "CHANGELOG.md", "Makefile")
SKIPPED_DIRS = {"__pycache__", ".venv", "node_modules"}
TEXT_SUFFIXES = {".py", ".md", ".http", ".lua", ".txt", ".toml", ".yml", ".yaml", ".json", ".html", ".js", ".css", ""}

API_CITATION = re.compile(r"docs/api\.md#([A-Za-z0-9_-]+)")
# A Markdown link to a section of a local page: [text](page.md#anchor) or [text](#anchor).
SECTION_LINK = re.compile(r"\]\(((?:[^()\s#]*\.md)?)#([^()\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
# "SPEC §4", "SPEC section 4", "SPEC.md": a citation of the outside contract.
OUTSIDE_SPEC = re.compile(r"\bSPEC\b")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor a page offers: its headings' (numbered when repeated) and explicit ones."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        found.update(EXPLICIT_ANCHOR.findall(line))
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def citing_files() -> Iterator[Path]:
    for name in CITING:
        path = ROOT / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            if found.is_file() and found.suffix in TEXT_SUFFIXES and not SKIPPED_DIRS & set(found.parts):
                yield found


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def where(path: Path, text: str, offset: int) -> str:
    return f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, offset) + 1}"


def test_the_contract_is_in_the_repository_and_the_readme_links_it() -> None:
    assert API.is_file()
    assert "(docs/api.md)" in read(ROOT / "README.md")


def test_every_cited_section_of_the_contract_exists() -> None:
    sections = anchors(API)
    cited = 0
    missing = []
    for path in citing_files():
        text = read(path)
        for match in API_CITATION.finditer(text):
            cited += 1
            if match.group(1) not in sections:
                missing.append(f"{where(path, text, match.start())}: docs/api.md#{match.group(1)}")
    assert not missing, "no such section in docs/api.md:\n" + "\n".join(missing)
    assert cited >= 30, "the code and tests cite the contract by section"


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_every_section_link_between_the_docs_exists(page: Path) -> None:
    text = read(page)
    broken = []
    for match in SECTION_LINK.finditer(text):
        target, anchor = match.groups()
        linked = (page.parent / target).resolve() if target else page
        if not linked.is_file():
            broken.append(f"{where(page, text, match.start())}: {target} does not exist")
        elif anchor not in anchors(linked):
            broken.append(f"{where(page, text, match.start())}: no section #{anchor} in {target or page.name}")
    assert not broken, "\n".join(broken)


def test_nothing_cites_a_contract_outside_the_repository() -> None:
    this_file = Path(__file__).resolve()
    cited = []
    for path in citing_files():
        if path.resolve() == this_file:
            continue
        text = read(path)
        cited += [where(path, text, match.start()) for match in OUTSIDE_SPEC.finditer(text)]
    assert not cited, "cite docs/api.md#<section> instead of the outside spec:\n" + "\n".join(cited)


def test_the_slug_rule_matches_githubs() -> None:
    assert slug("Retries: `Idempotency-Key`") == "retries-idempotency-key"
    assert slug("Durability (memory storage)") == "durability-memory-storage"
    assert slug("The OpenAPI document") == "the-openapi-document"
    assert slug("Choices where the spec is silent") == "choices-where-the-spec-is-silent"
