"""The documentation site builds with warnings as errors, and its reference stays complete.

``mkdocs build --strict`` fails on any warning: a broken link or anchor between pages (the
``validation:`` options in mkdocs.yml), a page missing from the nav, a reference to a Python
object that mkdocstrings cannot find, a docstring it cannot parse.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from signalr_groups.checks import CHECK_IDS
from signalr_groups.conf import DEFAULTS
from tests.docs.fences import DOCS, ROOT

MKDOCS = Path(sys.executable).parent / "mkdocs"


def test_docs_build_strictly(tmp_path: Path) -> None:
    assert MKDOCS.exists(), "mkdocs is not installed: scripts/setup.sh installs docs/requirements.txt"
    site = tmp_path / "site"
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (site / "index.html").exists()
    hubs = (site / "reference" / "api" / "hubs" / "index.html").read_text(encoding="utf-8")
    assert 'id="signalr_groups.hubs.hub.Hub"' in hubs, "the API reference rendered no Hub"
    assert ":class:" not in hubs, "a Sphinx role reached the page (scripts/griffe_sphinx_roles.py)"


def _documented_headings(page: Path) -> set[str]:
    return set(re.findall(r"^#{2,4} `([^`]+)`", page.read_text(encoding="utf-8"), flags=re.MULTILINE))


def test_every_setting_is_documented() -> None:
    missing = set(DEFAULTS) - _documented_headings(DOCS / "reference" / "settings.md")
    assert not missing, f"docs/reference/settings.md lacks a section for: {sorted(missing)}"


def test_every_system_check_is_documented() -> None:
    missing = set(CHECK_IDS) - _documented_headings(DOCS / "reference" / "checks.md")
    assert not missing, f"docs/reference/checks.md lacks a section for: {sorted(missing)}"
