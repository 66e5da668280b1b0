"""The repository stands alone: code and docs cite only documents it contains, and every
`docs/protocol.md §n.n` they cite is a section of that page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Background documents that live outside the repository; nothing may cite them.
OUTSIDE = re.compile(r"\b(PROTOCOL|DESIGN|ZOOKEEPER|PLATFORM)(\.md\b| \d)")
CITATION = re.compile(r"protocol\.md\s+§(\d+(?:\.\d+)?)")


def _tracked_text() -> dict[str, str]:
    names = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.sh", "*.toml", "*.js", "*.html"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {n: (ROOT / n).read_text(errors="replace") for n in names if (ROOT / n).is_file()}


def test_nothing_cites_documents_outside_the_repository() -> None:
    offenders = [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for name, text in _tracked_text().items()
        if name != "tests/unit/test_docs_citations.py"
        for m in OUTSIDE.finditer(text)
    ]
    assert not offenders, offenders


def test_every_cited_protocol_section_exists() -> None:
    page = (ROOT / "docs" / "protocol.md").read_text()
    sections = set(re.findall(r"^#+ (\d+(?:\.\d+)?)[. ]", page, re.M))
    cited = {
        (name, m.group(1))
        for name, text in _tracked_text().items()
        for m in CITATION.finditer(text)
    }
    assert cited, "no citations found: the pattern is wrong"
    missing = sorted((name, s) for name, s in cited if s not in sections)
    assert not missing, missing
