"""A griffe extension for the docs site (mkdocs.yml loads it): Sphinx habits in our docstrings, as Markdown.

The package's docstrings are written for humans first, with a few Sphinx conventions that
mkdocstrings would otherwise print literally:

- roles such as ``:class:`~.hub.Hub``` become code that links to the object's reference entry
  when the site renders it (an *optional* autoref: no warning, no link, when it does not);
- a paragraph ending in ``::`` (a literal block follows) ends in ``:``;
- attributes documented with ``#:`` comments above them (Sphinx's autodoc convention) get
  those comments as their docstring, since griffe reads only string literals.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>class|func|meth|mod|data|attr|exc|obj):`(?P<target>[^`]+)`")
_LITERAL_MARKER = re.compile(r"(?<=\S)::$", re.MULTILINE)
_BARE_LITERAL_MARKER = re.compile(r"^[ \t]*::[ \t]*$", re.MULTILINE)


def _package_of(module: griffe.Module) -> str:
    """The package a relative name in ``module`` starts from (the module itself for a package)."""
    return module.path if module.is_init_module else module.path.rpartition(".")[0]


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path of the object ``target`` names from ``obj``'s module, or None if unknown."""
    module = obj.module
    if target.startswith("."):
        dots = len(target) - len(target.lstrip("."))
        base = _package_of(module)
        for _ in range(dots - 1):
            base = base.rpartition(".")[0]
        candidates = [f"{base}.{target[dots:]}"]
    elif target.startswith("signalr_groups"):
        candidates = [target]
    else:
        candidates = [f"{module.path}.{target}", f"{_package_of(module)}.{target}"]
    root: griffe.Object = module
    while root.parent is not None:
        root = root.parent
    for candidate in candidates:
        relative = candidate.removeprefix(root.path).lstrip(".")
        try:
            found = root[relative] if relative else root
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        return str(found.canonical_path)
    return None


def _roles_to_markdown(obj: griffe.Object, text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        target = match.group("target").strip().removesuffix("()")
        short = target.startswith("~")
        target = target.lstrip("~")
        resolved = _resolve(obj, target)
        if short:
            label = target.rpartition(".")[2]
        elif target.startswith(".") and resolved is not None:
            label = resolved
        else:
            label = target
        code = f"<code>{label}</code>"
        if resolved is None:
            return code
        return f'<autoref identifier="{resolved}" optional>{code}</autoref>'

    text = _ROLE.sub(replace, text)
    text = _BARE_LITERAL_MARKER.sub("", text)
    return _LITERAL_MARKER.sub(":", text)


def _comment_above(obj: griffe.Object) -> str | None:
    """The ``#:`` comment lines right above an attribute's first line, if any."""
    if obj.lineno is None or not isinstance(obj.filepath, Path):
        return None
    try:
        lines = obj.lines_collection[obj.filepath]
    except KeyError:
        return None
    comment: list[str] = []
    index = obj.lineno - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return " ".join(comment) or None


class SphinxRolesToMarkdown(griffe.Extension):
    """Rewrites Sphinx roles and ``::`` markers, and reads ``#:`` attribute comments (see the module docstring)."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Fix the docstring of every object once the whole tree is loaded."""
        self._fix(obj)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Fix the root package's own docstring (``on_object`` does not see it)."""
        self._fix(pkg)

    def _fix(self, obj: griffe.Object) -> None:
        if obj.is_alias:
            return
        if obj.docstring is None and obj.is_attribute:
            comment = _comment_above(obj)
            if comment:
                obj.docstring = griffe.Docstring(comment, lineno=obj.lineno, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = _roles_to_markdown(obj, obj.docstring.value)
