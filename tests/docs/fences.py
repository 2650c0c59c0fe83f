"""Reading the docs' Markdown: fenced code blocks with their language and title."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^`\n]*)$")
_TITLE = re.compile(r"""\btitle=(?:"(?P<double>[^"]*)"|'(?P<single>[^']*)')""")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced code block: ```` ```python title="mysite/chat/hubs.py" ````."""

    language: str
    title: str | None
    body: str
    line: int  # where the block starts in its file (1-based), for messages


def code_blocks(path: Path) -> list[CodeBlock]:
    """Every fenced code block of a Markdown file, in order (blocks nested in admonitions and tabs too)."""
    blocks: list[CodeBlock] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE_OPEN.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, info = opening.group("indent"), opening.group("fence"), opening.group("info").strip()
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end])
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{index + 1}: code block never closed")
        language = info.split()[0] if info and not info.startswith("title=") else ""
        title = _TITLE.search(info)
        blocks.append(
            CodeBlock(
                language=language.lstrip("{."),
                title=(title.group("double") or title.group("single")) if title else None,
                body=textwrap.dedent("\n".join(line.removeprefix(indent) for line in body)) + "\n",
                line=index + 1,
            )
        )
        index = end + 1
    return blocks
