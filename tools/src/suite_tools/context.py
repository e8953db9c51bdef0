"""The build context: the repository as ``docker build`` would send it, honouring ``.dockerignore``.

docker-py's own context walker skips a directory unless an exception pattern starts with its
literal path, so ``!services/*/src/**`` never reaches ``services/api``. The suite's
``.dockerignore`` (exclude everything, re-include a few globs) needs the rules the Docker CLI
applies (moby's ``patternmatcher``, ``MatchesUsingParentResults``), implemented here:

* patterns apply in order and the last one that matches decides;
* a pattern that matched a directory matches everything below it, except that a pattern is not
  even tried on a path whose verdict it could not change (an exclusion on an already excluded
  path): so ``**`` then ``!a/*/b`` then ``a/x`` still sends ``a/x/b``, as the CLI does;
* ``*`` and ``?`` stay within one path segment, ``**`` spans any number of them;
* the Dockerfile and ``.dockerignore`` are always sent.

``tests/test_context.py`` compares the result with what the Docker CLI sends.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO

__all__ = ["Ignore", "context_files", "context_tar"]


def _regex(pattern: str) -> str:
    """One ``.dockerignore`` pattern as a regular expression over slash-separated paths."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                out.append(".*" if i == len(pattern) else "(?:.*/)?")
                continue
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _clean(pattern: str) -> str:
    # moby: filepath.Clean, and a leading slash means the context root.
    cleaned = os.path.normpath(pattern.strip()).lstrip("/")
    return "" if cleaned == "." else cleaned


@dataclass(frozen=True)
class _Pattern:
    text: str
    exception: bool

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(_regex(self.text) + r"\Z")

    @cached_property
    def segments(self) -> list[re.Pattern[str] | None]:
        """Per-segment matchers; None for ``**`` (any depth)."""
        return [
            None if part == "**" else re.compile(_regex(part) + r"\Z")
            for part in self.text.split("/")
        ]

    def may_match_below(self, directory: str) -> bool:
        """Whether something under ``directory`` could match (so the walk must go in)."""
        for part, matcher in zip(directory.split("/"), self.segments, strict=False):
            if matcher is None:
                return True
            if not matcher.match(part):
                return False
        return len(self.segments) > directory.count("/") + 1


class Ignore:
    """The rules of one ``.dockerignore``."""

    def __init__(self, lines: list[str]) -> None:
        patterns = []
        for line in lines:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            exception = text.startswith("!")
            cleaned = _clean(text[1:] if exception else text)
            if cleaned:
                patterns.append(_Pattern(cleaned, exception))
        self._patterns = patterns

    @classmethod
    def read(cls, root: Path) -> Ignore:
        path = root / ".dockerignore"
        return cls(path.read_text().splitlines() if path.is_file() else [])

    def verdict(self, path: str, parent: Sequence[bool] = ()) -> tuple[bool, list[bool]]:
        """Whether ``path`` is excluded, and which patterns matched it (for its children)."""
        excluded = False
        matched = []
        for index, pattern in enumerate(self._patterns):
            match = bool(parent) and parent[index]
            if not match and pattern.exception == excluded:
                match = bool(pattern.regex.match(path))
            elif not match:
                # Cannot change the verdict: not tried, and so not inherited below either.
                matched.append(False)
                continue
            matched.append(match)
            if match:
                excluded = not pattern.exception
        return excluded, matched

    def excluded(self, path: str) -> bool:
        """The verdict for one relative path, its parent directories evaluated first."""
        parts = path.split("/")
        parent: list[bool] = []
        excluded = False
        for depth in range(1, len(parts) + 1):
            excluded, parent = self.verdict("/".join(parts[:depth]), parent)
        return excluded

    def must_enter(self, directory: str) -> bool:
        """An excluded directory is still walked when an exception may re-include below it."""
        return any(p.exception and p.may_match_below(directory) for p in self._patterns)


def context_files(root: Path, dockerfile: str = "Dockerfile") -> list[str]:
    """The relative paths (files and symlinks) the context holds, sorted."""
    ignore = Ignore.read(root)
    always = {dockerfile, ".dockerignore"}
    found: list[str] = []
    # Pattern matches of each walked directory, inherited by what is below it.
    inherited: dict[str, list[bool]] = {"": []}
    for current, dirs, files in os.walk(root):
        relative = os.path.relpath(current, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        parent = inherited.pop(prefix)
        # A symlink to a directory is sent as the link, like any other file.
        links = [name for name in dirs if os.path.islink(os.path.join(current, name))]
        kept = []
        for name in sorted(set(dirs) - set(links)):
            excluded, matched = ignore.verdict(prefix + name, parent)
            if not excluded or ignore.must_enter(prefix + name):
                inherited[prefix + name + "/"] = matched
                kept.append(name)
        dirs[:] = kept
        for name in (*files, *links):
            if prefix + name in always or not ignore.verdict(prefix + name, parent)[0]:
                found.append(prefix + name)
    return sorted(found)


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # The builder's COPY applies its own ownership; the developer's uid is noise in the layer.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def context_tar(root: Path, dockerfile: str = "Dockerfile") -> IO[bytes]:
    """The context as a gzipped tar, rewound.

    Gzipped because BuildKit sniffs an uploaded context by its first bytes: a plain tar whose
    first entry is a PAX header (Python's default format) is taken for a lone Dockerfile.
    """
    # Spooled: the suite's context is a few hundred KB; a big one goes to disk.
    archive = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)  # noqa: SIM115
    with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=1) as tar:
        for name in context_files(root, dockerfile):
            tar.add(root / name, arcname=name, recursive=False, filter=_owned_by_root)
    archive.seek(0)
    return archive
