"""House style that CI enforces: every Python file of the project passes pyflakes (no unused imports
or names, no undefined names) and keeps its lines within 120 characters."""
from __future__ import annotations

import io
from pathlib import Path

from pyflakes.api import check
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 120
SOURCES = sorted(path for folder in ("swinkit", "tests", "benchmarks", "scripts")
                 for path in (ROOT / folder).rglob("*.py"))


def test_there_are_sources_to_check():
    assert len(SOURCES) > 40 and ROOT / "swinkit" / "models" / "swin.py" in SOURCES


def test_pyflakes_finds_nothing():
    warnings, errors = io.StringIO(), io.StringIO()
    reporter = Reporter(warnings, errors)
    count = sum(check(path.read_text(), str(path.relative_to(ROOT)), reporter) for path in SOURCES)
    assert count == 0, warnings.getvalue() + errors.getvalue()


def test_lines_fit_the_width():
    long_lines = [f"{path.relative_to(ROOT)}:{number}: {len(line)} characters"
                  for path in SOURCES
                  for number, line in enumerate(path.read_text().splitlines(), 1) if len(line) > MAX_LINE]
    assert not long_lines, "\n".join(long_lines)


def test_the_checks_catch_what_they_look_for():
    warnings = io.StringIO()
    assert check("import os\n", "example.py", Reporter(warnings, io.StringIO())) == 1
    assert "imported but unused" in warnings.getvalue()
